"""Errors that the CLI reports to the user as one line and exit status 2.

Anything raised as a ``UserInputError`` is the user's to fix (a config key, a file, a value),
so its message must name that key, file or value. Every other exception is a bug in nasps and
keeps its traceback.
"""


class UserInputError(Exception):
    """Bad input from the user: a config, a path, a run directory, a CLI value."""


class ConfigError(UserInputError):
    """A config file or override that does not describe a valid search."""
