"""One exception type for bad user input, so the CLI can print one line instead of a traceback."""


class OrbitbenchError(ValueError):
    """Bad user input: a config value, CLI flag, data file or leaderboard entry.

    The message names the bad value and what would be accepted; the CLI prints it as one line
    (`orbitbench: <message>`) and exits with status 2.
    """


class Interrupted(BaseException):
    """A long command stopped by a signal (SIGINT, SIGTERM) after cleaning up after itself.

    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it; the
    front end prints its message as one line and exits with `exit_status` (128 + the signal).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum
