"""The Ray runtime: the only package of nasps that imports Ray.

It arranges the plain pieces (parameter shards, controller logic, ledger, evaluators) as
actors: S parameter-server shards (``shard.py``), K controller replicas (``replica.py``) with m
child workers each (``worker.py``, fed by ``pool.py``), and a recorder that owns the results
store (``recorder.py``).
``driver.py`` starts or joins Ray and runs a search. Nothing is imported here, so a child
worker process loads only what it needs.
"""
