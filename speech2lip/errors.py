"""The one exception type users see."""


class Speech2LipError(Exception):
    """An error the user can fix. The message names the file (or config key) and the fix.

    The CLI prints it as a single line and exits non-zero; anything else is a bug and keeps its
    traceback.
    """
