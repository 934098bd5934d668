"""User-facing errors: the CLI prints these as one line (no Java or Python stack trace) and exits 2."""


class UbpError(Exception):
    """A problem the user can fix (bad path, bad input, wrong model version...)."""
