"""The `orbitbench` console script: one entry point, one module per subcommand.

`fit`, `validate` and `test` go to the LightningCLI (`orbitbench.training_cli`); `theory`,
`sweep` and `leaderboard` to their own modules. Heavy imports happen only for the subcommand
that needs them, so `orbitbench --help` and `--version` are instant.
"""

from __future__ import annotations

import sys

from orbitbench import __version__

USAGE = """\
usage: orbitbench <command> [options]

Can an architecture learn a symmetry it has only partly seen?

commands:
  fit | validate | test   train / evaluate a model on partially observed orbits (LightningCLI;
                          `orbitbench fit --help` for every option)
  theory <experiment>     the paper's kernel experiments (toy, pairs, cnn, seeds, multiclass)
  sweep                   a grid of fits (models x n_angles x leave-out classes x seeds); `sweep plot`
  leaderboard             add | build | check leaderboard entries
  predict-kernel          kernel predictions of a saved fit's out-test accuracy (--ckpt_path PATH)

options:
  -h, --help              show this message and exit
  --version               print the orbitbench version and exit
"""

LIGHTNING_COMMANDS = ("fit", "validate", "test")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(f"orbitbench {__version__}")
        return 0
    if command in LIGHTNING_COMMANDS:
        from orbitbench.training_cli import run_lightning_cli

        return run_lightning_cli(argv)
    if command == "theory":
        from orbitbench.theory.cli import main as theory_main

        return theory_main(rest)
    if command == "sweep":
        from orbitbench.sweep import main as sweep_main

        return sweep_main(rest)
    if command == "predict-kernel":
        from orbitbench.predict_kernel import main as predict_kernel_main

        return predict_kernel_main(rest)
    if command == "leaderboard":
        from orbitbench.leaderboard import main as leaderboard_main

        return leaderboard_main(rest)
    print(
        f"orbitbench: unknown command {command!r}; expected one of "
        f"{', '.join(LIGHTNING_COMMANDS + ('theory', 'sweep', 'leaderboard', 'predict-kernel'))} (see `orbitbench --help`)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
