"""Bad user input becomes one line: the exception types, and the translation of parser errors."""

from __future__ import annotations

import re


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


# Options that were renamed: the old name's error says the new one.
RENAMED_OPTIONS = {"seeds_per_class": "images_per_class (the DataModule's images kept per class), "
                                      "probe_digits_per_class (the kernel callback's probe digits per class)"}
_BOILERPLATE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:")


def condense_parser_error(message: str) -> str:
    """One readable line from a jsonargparse error: the full key, what was expected, what was given.

    `Parser key "data": ... Parser key "n_angles": Expected a <class 'int'>. Got value: abc` becomes
    `--data.n_angles: expected int, got 'abc'`. Only the `Parser key "..."` markers and the
    `Expected a <class ...>` phrase are read; where jsonargparse words an error otherwise, the line
    is the key and the first line it wrote about it, and without any key its first line: always
    one line, whatever the version (pyproject allows a range of jsonargparse releases).
    """
    lines = [line.strip(" -") for line in message.splitlines() if line.strip(" -")]
    if not lines:
        return "invalid command line"
    text = " ".join(message.split())
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys:
        return lines[0][:300]
    key = ".".join(keys)
    detail = text.rsplit(f'Parser key "{keys[-1]}":', 1)[1]
    # where this key's own value was refused, a Union's other alternatives (another class_path that
    # lacks the option) are not the reason
    head = detail.split(" - Problem with given class_path")[0]
    if "Expected a <class" in head:
        detail = head
    refused = re.search(r"Option '([\w.]+)' is not accepted", detail)
    if refused:
        option = refused.group(1)
        hint = f"; renamed: {RENAMED_OPTIONS[option]}" if option in RENAMED_OPTIONS else ""
        owner = re.search(r"Problem with given class_path '([\w.]+)'", detail)
        return f"--{key}.{option}: not an option of {owner.group(1) if owner else key}{hint}"
    core = detail.split(" - Expected a <class 'NoneType'>")[0]  # drop the Optional[...] alternative
    nested = re.search(r"val='(.*?)'\)", detail)
    given = nested or re.search(r"(?:Got value|Given value): (.+?)(?: - |$)", detail)
    expected = list(dict.fromkeys(re.findall(r"Expected a <class '([\w.]+)'>", core)))
    if expected:
        got = f", got {given.group(1).strip()!r}" if given else ""
        return f"--{key}: expected {' or '.join(expected)}{got}"
    # Any other wording: the first line jsonargparse wrote about the innermost key.
    last = max(i for i, line in enumerate(lines) if f'Parser key "{keys[-1]}"' in line)
    said = [lines[last].split(f'Parser key "{keys[-1]}":', 1)[-1].strip(), *lines[last + 1:]]
    first = next((line for line in said if line and not line.startswith(_BOILERPLATE)), "invalid value")
    return f"--{key}: {first}"[:300]
