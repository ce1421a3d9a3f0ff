"""The exception type for mistakes a user can make and fix (bad input, bad config, missing files)."""


class GluonFaceError(Exception):
    """A user-facing error. The message names the problem and how to fix it.

    The CLI prints it as ``error: <message>`` and exits with status 2, with no traceback.
    """
