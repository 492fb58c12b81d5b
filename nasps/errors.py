"""Errors that the CLI reports to the user as one line.

Anything raised as a ``UserInputError`` is the user's to fix (a config key, a file, a value),
so its message must name that key, file or value; it exits with status 2. A ``SearchFailed``
is a search that cannot go on (its evaluator cannot start, its store cannot be written), and an
``ExportFailed`` an exported file that would not compute what nasps's network does; both exit
with status 1. Every other exception is a bug in nasps and keeps its traceback.
"""


class UserInputError(Exception):
    """Bad input from the user: a config, a path, a run directory, a CLI value."""


class ConfigError(UserInputError):
    """A config file or override that does not describe a valid search."""


class SearchFailed(Exception):
    """A search that cannot go on; what was committed is kept and ``--resume`` continues it."""


class ExportFailed(Exception):
    """An exported graph whose outputs are not the PyTorch network's; it is not written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, ``timeout``, Kubernetes, ``ray job stop``): handled as Ctrl-C."""


class MissingExtra(UserInputError, ImportError):
    """An optional integration whose packages are not installed (``pip install 'nasps[EXTRA]'``)."""

    def __init__(self, feature: str, extra: str):
        super().__init__(f"{feature} needs the {extra} extra: pip install 'nasps[{extra}]'")
