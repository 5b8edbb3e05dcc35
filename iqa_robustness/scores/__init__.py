"""The benchmark's scores (:mod:`.formulas`, pure numpy) and its per-image CSV format (:mod:`.msu_csv`)."""
