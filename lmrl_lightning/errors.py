"""User-facing errors: the `lmrl` command prints their one-line message without a traceback."""


class LMRLError(ValueError):
    """Bad input from the user (a dataset, a name, a path, a checkpoint); the message says what to do."""
