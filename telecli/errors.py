"""Expected failures: one line naming the problem and the fix; the CLI exits with code 2."""


class TelecliError(Exception):
    """An expected error (bad option, missing or corrupt file, shape mismatch, non-finite values).

    The message is a single line that names the problem and, where there is one, the fix.
    """

    exit_code = 2


class IntegrityError(TelecliError):
    """A stored file does not match its recorded hash, size or shape."""


class NonFiniteError(TelecliError):
    """Training produced a non-finite loss or parameter."""
