"""One value where a list is expected: `--models tiny_resnet` means `--models '[tiny_resnet]'`.

jsonargparse reads a list-typed flag's value as YAML, so a single name fails with "expected list".
Every command's argv passes through `wrap_single_values` first, with the flags that take only
lists (or nothing): for the function commands read off their jsonargparse parser, for the
Lightning commands off the constructor signatures of the classes they configure (subclass-mode
sections have no parser actions until a class is chosen).
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import types
import typing
from collections.abc import Iterable

import yaml

_LIST_ORIGINS = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence,
                 collections.abc.Set, collections.abc.Iterable, collections.abc.Collection)  # fmt: skip


def takes_only_lists(hint: object) -> bool:
    """A type whose values are all sequences (None allowed): `list[str] | None`, `Sequence[int]`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return bool(members) and all(takes_only_lists(a) for a in members)
    return origin in _LIST_ORIGINS or hint in (list, tuple)


def parser_list_flags(parser) -> set[str]:
    """The `--long` option strings of a jsonargparse parser (and its subcommands) that take only lists."""
    flags: set[str] = set()
    for action in getattr(parser, "_actions", []):
        if takes_only_lists(getattr(action, "_typehint", None)):
            flags.update(s for s in action.option_strings if s.startswith("--") and not s.endswith("+"))
        for sub in (getattr(action, "_name_parser_map", None) or {}).values():
            flags |= parser_list_flags(sub)
    return flags


def class_list_flags(prefix: str, classes: Iterable[type], subclass_mode: bool = False) -> set[str]:
    """`--<prefix>.<name>` for every list-only constructor argument of the classes (also as
    `--<prefix>.init_args.<name>` for a subclass-mode section)."""
    flags: set[str] = set()
    for cls in classes:
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: no list flags from it
            continue
        for name in inspect.signature(cls.__init__).parameters:
            if takes_only_lists(hints.get(name)):
                flags.add(f"--{prefix}.{name}")
                if subclass_mode:
                    flags.add(f"--{prefix}.init_args.{name}")
    return flags


def _as_list(value: str) -> str:
    """`tiny_resnet` -> `["tiny_resnet"]`; a value that already is a list (or null) stays as it is."""
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        loaded = value
    if loaded is None or isinstance(loaded, (list, dict)):
        return value
    return json.dumps([value])  # JSON strings: jsonargparse converts "16" for list[int]


def wrap_single_values(argv: list[str], flags: set[str]) -> list[str]:
    """argv with every single value of a list-only flag given as a one-element list."""
    out: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        name, equals, value = token.partition("=")
        if equals and name in flags:
            out.append(f"{name}={_as_list(value)}")
        elif token in flags and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            out += [token, _as_list(argv[index + 1])]
            index += 1
        else:
            out.append(token)
        index += 1
    return out
