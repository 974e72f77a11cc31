"""The error every operating command raises for a mistake the user can fix."""


class CommandError(Exception):
    """str(error) says what went wrong and what to do; shown without a traceback."""
