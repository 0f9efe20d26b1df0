"""`orbitbench.errors.condense_parser_error`: one line from any jsonargparse error text, whatever its wording."""

from __future__ import annotations

import pytest

from orbitbench.errors import condense_parser_error


def test_known_wording_names_key_expected_and_given() -> None:
    message = 'Parser key "jobs":\n  Expected a <class \'int\'>. Got value: many'
    assert condense_parser_error(message) == "--jobs: expected int, got 'many'"


def test_other_wordings_give_the_key_and_the_first_thing_said_about_it() -> None:
    # Wordings the regexes do not know (another jsonargparse release): still one useful line.
    message = 'Parser key "data":\n  Parser key "n_angles":\n    Value "abc" is not an integer\n    (more detail)\n'
    assert condense_parser_error(message) == '--data.n_angles: Value "abc" is not an integer'
    union = ('Parser key "models":\n  Does not validate against any of the Union subtypes\n  Subtypes: [list[str]]\n'
             "  Errors:\n    - a list is needed here\n  Given value type: <class 'dict'>")
    assert condense_parser_error(union) == "--models: a list is needed here"
    assert condense_parser_error('Parser key "config": File does not exist: \'/x.yaml\'') == "--config: File does not exist: '/x.yaml'"


def test_without_any_key_the_first_line_and_never_several() -> None:
    assert condense_parser_error("Unrecognized arguments: --frob 1\n  usage: ...\n  more") == "Unrecognized arguments: --frob 1"
    assert condense_parser_error("\n\n") == "invalid command line"
    long = condense_parser_error("x" * 1000)
    assert len(long) == 300 and "\n" not in long


@pytest.mark.parametrize("option, said", [
    (["--trainer.callbacks.n_seeds", "abc"], "--trainer.callbacks.n_seeds: expected int, got 'abc'"),
    (["--trainer.callbacks.empirical_points", "[3]"], "--trainer.callbacks.empirical_points: expected int or dict, got '[3]'"),
    (["--trainer.callbacks.bogus", "3"], "--trainer.callbacks.bogus: not an option of orbitbench.run.callbacks.EmpiricalNTKCallback"),
])  # fmt: skip
def test_a_callback_options_bad_value_is_named_as_a_bad_value(option, said, capsys) -> None:
    """The real parser: a callback option's refused value once read "not an option of lightning.Callback"
    (the Union's other alternative, a bare Callback, has no such option)."""
    from orbitbench.cli import main

    argv = ["fit", "--trainer.callbacks+", "orbitbench.run.callbacks.EmpiricalNTKCallback", *option]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"orbitbench: {said}"
