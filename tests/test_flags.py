"""`orbitbench.flags`: a single value of a list-only flag becomes a one-element list, nothing else changes."""

from __future__ import annotations

from collections.abc import Sequence

from orbitbench.flags import takes_only_lists, wrap_single_values

FLAGS = {"--models", "--rotations"}


def test_single_values_become_one_element_lists() -> None:
    assert wrap_single_values(["--models", "tiny_resnet"], FLAGS) == ["--models", '["tiny_resnet"]']
    assert wrap_single_values(["--rotations=16"], FLAGS) == ['--rotations=["16"]']
    assert wrap_single_values(["--models", "timm:resnet18", "--jobs", "2"], FLAGS) == ["--models", '["timm:resnet18"]', "--jobs", "2"]


def test_lists_nulls_other_flags_and_a_missing_value_are_left_alone() -> None:
    for argv in (["--models", "[a, b]"], ["--models", "null"], ["--jobs", "3"], ["--models"], ["--models", "--out", "x"]):
        assert wrap_single_values(argv, FLAGS) == argv


def test_which_types_take_only_lists() -> None:
    assert takes_only_lists(list[str]) and takes_only_lists(list[str] | None) and takes_only_lists(Sequence[int])
    assert not takes_only_lists(list[int] | str | int)  # e.g. trainer.devices: "auto" and 2 are fine as they are
    assert not takes_only_lists(int) and not takes_only_lists(None)
