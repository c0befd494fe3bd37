"""Errors a user can act on.

Anything raised as `KdpipeError` is the user's to fix (a bad file, a bad flag, a
refused API key); the CLI prints it as one line and exits non-zero. Every other
exception is a bug in kdpipe and keeps its traceback.
"""


class KdpipeError(Exception):
    """A problem with the user's input, options or environment."""

    exit_code = 1


class InputError(KdpipeError):
    """A file that kdpipe cannot read as what it was asked to read."""

    def __init__(self, path, message, line=None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class UsageError(KdpipeError):
    """Options that contradict each other or are out of range."""

    exit_code = 2
