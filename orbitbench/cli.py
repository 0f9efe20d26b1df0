"""The `orbitbench` console script: one front end for every command.

`fit | validate | test | predict` are a LightningCLI (`orbitbench.run.cli`); every other
command is a typed Python function exposed through jsonargparse, so `--config FILE`,
`--print_config`, `--help` and one-line errors behave the same everywhere. The table below names
each function as `module:function` and is read without importing anything, so `orbitbench --help`
and `orbitbench theory --help` answer at once; a command imports its own module only when it runs.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable
from typing import Any

from orbitbench import __version__

LIGHTNING_COMMANDS = {
    "fit": "train a model on partially observed orbits",
    "validate": "evaluate a checkpoint on in-test and out-test",
    "test": "evaluate a checkpoint with the test loop",
    "predict": "per-sample predictions of a checkpoint (CSV) and its confusion figure",
}
# group -> subcommand -> ("module:function", one-line help[, "module:formatter" of its result]);
# "" marks a command without subcommands.
COMMANDS: dict[str, dict[str, tuple[str, ...]]] = {
    "theory": {
        "toy": ("orbitbench.experiments.toy:toy", "Fig. 2-3: RBF kernel on two interleaved circles"),
        "pairs": ("orbitbench.experiments.pairs:pairs", "Fig. 4: infinite-width MLP NTK on MNIST orbit pairs"),
        "cnn": ("orbitbench.experiments.cnn:cnn", "Fig. 5: CNN-FC / CNN-GAP NTKs on rotation and translation orbits"),
        "seeds": ("orbitbench.experiments.seeds:seeds", "Fig. 6A: several seeds per class, spectral vs exact error"),
        "multiclass": ("orbitbench.experiments.multiclass:multiclass", "Fig. 6B: ten-class spectral accuracy (--train: vs networks)"),
    },
    "sweep": {
        "run": ("orbitbench.sweep:run", "run (or resume) every unfinished cell of a sweep file"),
        "list": ("orbitbench.sweep:cells", "the cells of a sweep file and whether they are finished",
                 "orbitbench.sweep:format_cells"),
        "collect": ("orbitbench.sweep:collect", "rebuild <dir>/results.csv from the cells' run records"),
        "plot": ("orbitbench.sweep:plot", "Fig. 1C: accuracy vs group order per model"),
        "table": ("orbitbench.sweep.table:table", "mean ± SE and 95% t-interval per model x method x order (Markdown, CSV)"),
        "agreement": ("orbitbench.sweep.agreement:agreement", "per-digit kappa of two models' cells (e.g. X vs linearized(X))",
                      "orbitbench.sweep.agreement:format_agreement"),
    },
    "leaderboard": {
        "add": ("orbitbench.leaderboard:add", "validate a finished sweep and write its entries",
                "orbitbench.leaderboard.cli:format_added"),
        "build": ("orbitbench.leaderboard:build", "render leaderboard/README.md and index.html from the entries",
                  "orbitbench.leaderboard.cli:format_built"),
        "check": ("orbitbench.leaderboard:check", "recompute every entry from its cells; renderings up to date",
                  "orbitbench.leaderboard.cli:format_checked"),
        "verify": ("orbitbench.leaderboard:verify", "re-run randomly chosen cells of an entry and record the result",
                   "orbitbench.leaderboard.cli:format_verified"),
        "migrate": ("orbitbench.leaderboard.migrate:migrate", "bring entries of an older schema to the current one",
                    "orbitbench.leaderboard.migrate:format_migrated"),
        "load": ("orbitbench.leaderboard.load:load", "the network of an entry's cell: from the cache, or re-run and checked",
                 "orbitbench.leaderboard.load:format_loaded"),
    },
    "models": {
        "": ("orbitbench.models._listing:models", "the registered models matching a pattern (`orbitbench models 'paper*'`)"),
    },
    "predict-kernel": {
        "": ("orbitbench.run.predict_kernel:predict_kernel", "the kernel-prediction table of a checkpoint"),
    },
    "data": {
        "": ("orbitbench.data_cache:data", "which MNIST is installed, where, checked how; --fetch true installs full MNIST",
             "orbitbench.data_cache:format_report"),
    },
}
DEFAULT_SUBCOMMAND = {"sweep": "run"}  # `orbitbench sweep FILE.yaml` is `orbitbench sweep run FILE.yaml`


def usage() -> str:
    lines = ["usage: orbitbench <command> [options]", "", "Can an architecture learn a symmetry it has only partly seen?", "",
             "commands:"]  # fmt: skip
    lines += [f"  {name:<22}{text}" for name, text in LIGHTNING_COMMANDS.items()]
    for group, commands in COMMANDS.items():
        if "" in commands:
            lines.append(f"  {group:<22}{commands[''][1]}")
        else:
            lines.append(f"  {group + ' <command>':<22}{', '.join(commands)} (`orbitbench {group} --help`)")
    lines += ["", "Every command takes --help, --config FILE and --print_config.",
              "options:", "  -h, --help            show this message and exit",
              "  --version             print the orbitbench version and exit"]  # fmt: skip
    return "\n".join(lines) + "\n"


def group_usage(group: str) -> str:
    lines = [f"usage: orbitbench {group} <command> [options]", "", "commands:"]
    lines += [f"  {name:<12}{entry[1]}" for name, entry in COMMANDS[group].items()]
    lines.append(f"\n`orbitbench {group} <command> --help` for a command's options.")
    return "\n".join(lines) + "\n"


def load(target: str) -> Callable[..., Any]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def fail(message: str) -> int:
    print(f"orbitbench: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def run_function(entry: tuple[str, ...], args: list[str], prog: str) -> int:
    """Parse `args` against the entry's function signature with jsonargparse, call it, print its
    result (through the entry's formatter, if it names one)."""
    from jsonargparse import ArgumentError, auto_cli, capture_parser

    from orbitbench.errors import Interrupted, OrbitbenchError
    from orbitbench.errors import condense_parser_error
    from orbitbench.flags import parser_list_flags, wrap_single_values

    from orbitbench.io import check_config_args

    try:
        check_config_args(args)
        function = load(entry[0])
        parser = capture_parser(lambda: auto_cli(function, args=[], prog=prog, exit_on_error=False))
        args = wrap_single_values(args, parser_list_flags(parser))
        result = auto_cli(function, args=args, prog=prog, exit_on_error=False)
    except ArgumentError as error:
        return fail(condense_parser_error(str(error)))
    except OrbitbenchError as error:
        return fail(str(error))
    except Interrupted as stop:
        fail(str(stop))
        return stop.exit_status
    except SystemExit as exit_:  # --help, --print_config
        return exit_.code if isinstance(exit_.code, int) else 0
    if result is not None:
        print(load(entry[2])(result) if len(entry) > 2 else result)
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `orbitbench sweep list ... | head` ends quietly
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(f"orbitbench {__version__}")
        return 0
    if command in LIGHTNING_COMMANDS:
        from orbitbench.run.cli import run_lightning_cli

        return run_lightning_cli(argv)
    if command not in COMMANDS:
        known = ", ".join([*LIGHTNING_COMMANDS, *COMMANDS])
        return fail(f"unknown command {command!r}; expected one of {known} (see `orbitbench --help`)")
    commands = COMMANDS[command]
    if "" in commands:
        if command == "models" and rest and not rest[0].startswith("-"):
            rest = ["--pattern", *rest]  # `orbitbench models PATTERN`
        return run_function(commands[""], rest, f"orbitbench {command}")
    if not rest or rest[0] in ("-h", "--help"):
        print(group_usage(command), end="")
        return 0
    sub = rest[0]
    if sub not in commands and command in DEFAULT_SUBCOMMAND and sub.endswith((".yaml", ".yml")):
        sub, rest = DEFAULT_SUBCOMMAND[command], [sub, *rest[1:]]
    else:
        rest = rest[1:]
    if sub not in commands:
        return fail(f"unknown command {command} {sub!r}; expected one of {', '.join(commands)} (see `orbitbench {command} --help`)")
    return run_function(commands[sub], rest, f"orbitbench {command} {sub}")


if __name__ == "__main__":
    sys.exit(main())
