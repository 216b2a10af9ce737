"""Errors the harness reports to users as one line and a non-zero exit."""


class MarathonError(Exception):
    """A user-facing error: bad input, a missing resource, an unreachable Docker engine.

    The CLI prints ``str(error)`` on one line and exits with status 2. The message names the
    file, field or flag at fault.
    """
