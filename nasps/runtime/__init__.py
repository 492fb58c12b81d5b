"""The Ray runtime: the only package of nasps that imports Ray.

It arranges the plain pieces (parameter shards, controller logic, ledger, evaluators) as
actors: S parameter-server shards (``actors.py``), K controller replicas (``replica.py``) with m
child workers each (``worker.py``), and a recorder that owns the results store (``actors.py``).
``driver.py`` starts or joins Ray and runs a search. Nothing is imported here, so a child
worker process loads only what it needs.
"""
