"""The method: the controller that samples architectures (with its policies in
``nasps.policies``), REINFORCE, aging evolution, the reward predictor that screens samples,
the parameter-server shard that applies the updates, and ``serial``, the reference loop that
puts them together in one process."""
