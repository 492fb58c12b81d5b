"""The Ray runtime: the only package of nasps that imports Ray.

It arranges the plain pieces (parameter shards, controller logic, ledger, evaluators) as
actors: S parameter-server shards, K controller replicas with m child workers each, and a
recorder that owns the results store.
"""

from nasps.runtime.driver import SearchSummary, connect, run_search

__all__ = ["SearchSummary", "connect", "run_search"]
