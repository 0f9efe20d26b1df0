"""Old module paths of the flat layout, still importable: configs, checkpoints and leaderboard entries
written before the package got its floors name classes such as `orbitbench.callbacks.EmpiricalNTKCallback`.

An import of an old path returns the module at its new home (the same object, so `isinstance`
and pickled references agree). New code and docs use the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

MOVED: dict[str, str] = {
    "orbitbench.agreement": "orbitbench.theory.agreement",
    "orbitbench.callbacks": "orbitbench.run.callbacks",
    "orbitbench.checkpoints": "orbitbench.run.checkpoints",
    "orbitbench.closed_form": "orbitbench.theory.closed_form",
    "orbitbench.hparams": "orbitbench.run.callbacks.hparams",
    "orbitbench.kernel_predictors": "orbitbench.theory.registry",
    "orbitbench.kernels": "orbitbench.theory.kernels",
    "orbitbench.module": "orbitbench.run.module",
    "orbitbench.ntk": "orbitbench.theory.ntk",
    "orbitbench.pairs": "orbitbench.theory.pairs",
    "orbitbench.predict": "orbitbench.run.callbacks.prediction_writer",
    "orbitbench.predict_kernel": "orbitbench.run.predict_kernel",
    "orbitbench.predictors": "orbitbench.theory.predictions",
    "orbitbench.probe": "orbitbench.theory.probe",
    "orbitbench.progress": "orbitbench.run.callbacks.progress",
    "orbitbench.record": "orbitbench.run.record",
    "orbitbench.reference": "orbitbench.theory.reference",
    "orbitbench.spectral": "orbitbench.theory.spectral",
    "orbitbench.training_cli": "orbitbench.run.cli",
    "orbitbench.twins": "orbitbench.theory.twins",
}


def current_path(value: object) -> object:
    """Class paths of the flat layout at their new homes (`orbitbench.callbacks.X` ->
    `orbitbench.run.callbacks.X`), inside lists and dicts too; anything else unchanged. Settings
    written before and after the move then compare equal."""
    if isinstance(value, dict):
        return {k: current_path(v) for k, v in value.items()}
    if isinstance(value, list):
        return [current_path(v) for v in value]
    if isinstance(value, str) and value.startswith("orbitbench."):
        module, _, name = value.rpartition(".")
        if module in MOVED:
            return f"{MOVED[module]}.{name}"
    return value


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new home."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._own_spec = module.__spec__  # the import system sets __spec__ to the alias's; put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_spec


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
