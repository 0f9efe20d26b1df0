"""`orbitbench theory <experiment>`: the paper's kernel experiments, one module each.

Every experiment validates its flags, computes into a temporary run folder (CSV/npz results, a PNG
figure in the paper's layout, TensorBoard scalars and figures, summary.json), prints a short
summary and only then renames the folder into place.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

from orbitbench.errors import OrbitbenchError
from orbitbench.theory._run import add_common_arguments

EXPERIMENTS = {
    "toy": "Fig. 2-3: RBF kernel on two interleaved circles, spectral vs exact error vs distance and N",
    "pairs": "Fig. 4: infinite-width MLP NTK on random different-class MNIST orbit pairs",
    "cnn": "Fig. 5 / App. G: CNN-FC and CNN-GAP NTKs on rotation and translation orbits",
    "seeds": "Fig. 6A: several seeds per class, pair-averaged spectral vs exact error",
    "multiclass": "Fig. 6B: ten-class one-vs-many spectral accuracy vs n_angles",
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises OrbitbenchError instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise OrbitbenchError(f"{self.prog.removeprefix('orbitbench ')}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="orbitbench theory", description="The paper's kernel experiments.")
    sub = parser.add_subparsers(dest="experiment", metavar="<experiment>", parser_class=_Parser)
    for name, help_text in EXPERIMENTS.items():
        module = importlib.import_module(f"orbitbench.theory.{name}")
        experiment = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(experiment)
        module.add_arguments(experiment)
    return parser


def main(argv: list[str]) -> int:
    """Run one experiment; 0 on success, 2 with `orbitbench: <message>` on bad input."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.experiment is None:
            parser.print_help()
            return 0
        module = importlib.import_module(f"orbitbench.theory.{args.experiment}")
        function = getattr(module, args.experiment)  # the experiment's typed function
        accepted = inspect.signature(function).parameters
        path = function(**{k: v for k, v in vars(args).items() if k in accepted})
    except OrbitbenchError as error:
        print(f"orbitbench: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
