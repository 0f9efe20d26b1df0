"""`orbitbench.errors.condense_parser_error`: one line from any jsonargparse error text, whatever its wording."""

from __future__ import annotations

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
