"""The grid and its cases: what one case is (:mod:`.case`), and running it (:mod:`.suite`)."""
