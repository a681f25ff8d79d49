"""The one error type the command line turns into a one-line message (no traceback)."""


class RollcallError(Exception):
    """A problem a user can fix: the message names the thing and what to do."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
