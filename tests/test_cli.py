"""The `orbitbench` console script: one front end for every command, as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orbitbench


def run(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which("orbitbench", path=str(Path(sys.executable).parent))
    assert script is not None, "the orbitbench console script is not installed next to this Python"
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60)


def test_version_and_help_from_the_console_script() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"orbitbench {orbitbench.__version__}"
    help_ = run("--help")
    assert help_.returncode == 0
    for command in ("fit", "theory", "sweep", "leaderboard", "data"):
        assert command in help_.stdout


def test_unknown_command_is_one_line_and_exit_2() -> None:
    result = run("frobnicate")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "orbitbench: unknown command 'frobnicate'; expected one of fit, validate, test, predict, theory, sweep, "
        "leaderboard, models, predict-kernel, data (see `orbitbench --help`)"
    ]


REPO = Path(__file__).resolve().parents[1]


def test_group_help_lists_commands_without_importing_torch() -> None:
    # `orbitbench theory --help` must answer at once: it may not import the experiments (torch).
    code = ("import sys; from orbitbench.cli import main; assert main(['theory', '--help']) == 0; "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    for experiment in ("toy", "pairs", "cnn", "seeds", "multiclass"):
        assert f"  {experiment} " in result.stdout


def test_function_commands_take_config_files_and_report_bad_values_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "list.yaml"
    config.write_text(f"spec: {REPO / 'sweeps/cpu_quick.yaml'}\nout: {tmp_path / 'sweep'}\nmodels: [paper_mlp]\n")
    listed = run("sweep", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines and all(line.startswith("todo  paper_mlp-n") for line in lines)
    bad = run("sweep", "run", str(REPO / "sweeps/cpu_quick.yaml"), "--jobs", "many")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["orbitbench: --jobs: expected int, got 'many'"]
    unknown = run("sweep", "frobnicate", "--x")
    assert unknown.returncode == 2 and "unknown command sweep 'frobnicate'" in unknown.stderr
    assert not (tmp_path / "sweep").exists()


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    result = run("theory", "toy", "--out", str(blocker / "toy"), "--orbit_sizes", "[4]", "--distances", "[1.0]")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"orbitbench: cannot create folder {blocker}/toy.partial: Not a directory"]


def _list_flags_of_every_command() -> list[tuple[str, str, str, object]]:
    """(command, subcommand, flag, element type) for every list-only flag of every function command."""
    import types
    import typing

    from jsonargparse import auto_cli, capture_parser

    from orbitbench.cli import COMMANDS, load
    from orbitbench.flags import takes_only_lists

    found = []
    for group, commands in COMMANDS.items():
        for sub, entry in commands.items():
            parser = capture_parser(lambda: auto_cli(load(entry[0]), args=[], exit_on_error=False))
            for action in parser._actions:
                hint = getattr(action, "_typehint", None)
                if takes_only_lists(hint):
                    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
                    listed = [a for a in typing.get_args(hint) if a is not type(None)][0] if union else hint
                    element = (typing.get_args(listed) or (str,))[0]
                    found.append((group, sub, f"--{action.dest}", element))
    return found


def test_every_list_flag_of_every_function_command_takes_one_value(capsys) -> None:
    """`--models tiny_resnet`, `--rotations 16`: one value is a one-element list, as in LightningCLI habits."""
    import yaml

    from orbitbench.cli import main

    flags = _list_flags_of_every_command()
    names = {(g, s, f) for g, s, f, _ in flags}
    assert {("sweep", "run", "--models"), ("theory", "cnn", "--rotations"), ("theory", "multiclass", "--n_angles")} <= names
    for group, sub, flag, element in flags:
        value = {int: "3", float: "0.5"}.get(element, "some_name")
        words = [group, *([sub] if sub else []), flag, value, "--print_config"]
        if (group, sub) in {("sweep", "run"), ("sweep", "list")}:
            words.insert(2, str(REPO / "sweeps/cpu_quick.yaml"))
        assert main(words) == 0, (words, capsys.readouterr().err)
        printed = yaml.safe_load(capsys.readouterr().out)
        for part in flag[2:].split("."):
            printed = printed[part]
        assert printed == [{int: 3, float: 0.5}.get(element, "some_name")], (words, printed)


def test_one_value_list_flags_from_the_console_script(tmp_path: Path) -> None:
    quick = str(REPO / "sweeps/cpu_quick.yaml")
    listed = run("sweep", "list", quick, "--models", "paper_mlp", "--out", str(tmp_path / "s"))
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 6 and all("paper_mlp-n" in line for line in listed.stdout.splitlines())
    # A model that does not exist is one line, not six todo cells.
    missing = run("sweep", "list", quick, "--models", "tiny_resnet")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("orbitbench: unknown model 'tiny_resnet'")
    theory = run("theory", "cnn", "--rotations", "16", "--print_config")
    assert theory.returncode == 0, theory.stderr
    assert "rotations:\n- 16\n" in theory.stdout


def test_a_models_yaml_of_the_working_folder_configures_its_model_in_the_sweep(tmp_path: Path) -> None:
    """CONTRIBUTING step 2: `models/<name>.yaml` holds the submission's settings; the sweep reads it."""
    from orbitbench.sweep import load_sweep_file

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mlp.yaml").write_text("model:\n  init_args:\n    backbone_kwargs: {depth: 1, width: 16}\n")
    spec = load_sweep_file(REPO / "sweeps/cpu_quick.yaml").with_models(["mlp", "paper_mlp"], tmp_path / "models")
    assert spec.config_files == {"mlp": str(tmp_path / "models" / "mlp.yaml")}
    cell = next(c for c in spec.cells() if c.model == "mlp")
    from orbitbench.sweep import fit_argv

    argv = fit_argv(spec, cell, tmp_path / "cell")
    assert argv[1] == f"--config={tmp_path / 'models' / 'mlp.yaml'}"  # before the grid's flags, which win
