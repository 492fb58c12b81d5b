"""A run's durable state: the results store, the ledger that admits and records children, the
run directory and the learning state's checkpoint. What a search leaves on disk is all here."""
