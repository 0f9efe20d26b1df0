"""One exception type for bad user input, so the CLI can print one line instead of a traceback."""


class OrbitbenchError(ValueError):
    """Bad user input: a config value, CLI flag, data file or leaderboard entry.

    The message names the bad value and what would be accepted; the CLI prints it as one line
    (`orbitbench: <message>`) and exits with status 2.
    """
