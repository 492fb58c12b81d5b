"""Child trainers: a network and resident data in, per-epoch validation figures out."""
