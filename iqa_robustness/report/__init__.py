"""What a session leaves for people: the summary and table (:mod:`.summary`), baselines (:mod:`.baseline`)."""
