"""`orbitbench predict-kernel --ckpt_path PATH`: the kernel-prediction table of a saved fit.

The checkpoint carries what the measurement needs: the model's and the DataModule's
hyperparameters (class path included, as LightningCLI saves them) and, when the fit ran
EmpiricalNTKCallback, the initial weights for the `init` predictor. `--at_scale true` adds the
kernel regression at the network's scale (docs/THEORY.md §10) to a checkpoint a fit made without it.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import torch

from orbitbench import trust
from orbitbench.errors import OrbitbenchError
from orbitbench.theory.at_scale import initial_network, measure_at_scale, merge_at_scale
from orbitbench.theory.predictions import KernelPredictors, PredictionReport
from orbitbench.theory.regression import ScaleOptions
from orbitbench.theory.probe import ProbeOptions, draw_probe

__all__ = ["load_checkpoint", "measure_checkpoint", "predict_kernel", "main"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _class(path: str, what: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise OrbitbenchError(f"checkpoint {what} class {path!r} cannot be imported: {error}") from error


def _init_args(hparams: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def load_checkpoint(ckpt_path: Path, data_overrides: dict[str, Any] | None = None):
    """(model, set-up DataModule, initial weights or None, global step) from a fit's checkpoint."""
    path = Path(ckpt_path)
    checkpoint = trust.load_checkpoint(path)  # data only: weights_only, every saved class checked first
    model_hp = checkpoint.get("hyper_parameters") or {}
    data_hp = checkpoint.get("datamodule_hyper_parameters") or {}
    if "_class_path" not in data_hp:
        raise OrbitbenchError(f"--ckpt_path {path}: no DataModule hyperparameters (save it from `orbitbench fit`)")
    model_cls = _class(model_hp.get("_class_path", "orbitbench.run.module.OrbitClassifier"), "model")
    try:
        model = model_cls(**_init_args(model_hp))
        model.load_state_dict(checkpoint["state_dict"])
        dm = _class(data_hp["_class_path"], "DataModule")(**{**_init_args(data_hp), **(data_overrides or {})})
    except (TypeError, RuntimeError) as error:  # settings or weights edited by hand
        detail = " ".join(str(error).split())
        raise OrbitbenchError(f"--ckpt_path {path}: its settings and weights do not make the model they were "
                              f"saved from (edited, or saved by another model): {detail[:240]}") from None
    dm.setup("fit")
    state = next((v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("EmpiricalNTKCallback")), {})
    return model, dm, state.get("initial_state"), int(checkpoint.get("global_step", 0))


def measure_checkpoint(
    ckpt_path: Path,
    probe: ProbeOptions = ProbeOptions(),
    reg: float = 1e-10,
    dtype: str = "float64",
    data_overrides: dict[str, Any] | None = None,
    scale: ScaleOptions | None = None,
) -> PredictionReport:
    """Every kernel predictor against the checkpoint's network on its own data (no Trainer); with
    `scale`, each one's regression at scale too."""
    from orbitbench.run.callbacks.kernel_predictions import model_twin, network_of, undefined_predictors

    if dtype not in _DTYPES:
        raise OrbitbenchError(f"--dtype {dtype!r}; accepted: {', '.join(_DTYPES)}")
    model, dm, initial, step = load_checkpoint(ckpt_path, data_overrides)
    network = network_of(model)
    predictors = KernelPredictors(draw_probe(dm, probe), model_twin(model), reg, _DTYPES[dtype],
                                  undefined=undefined_predictors(model))
    predictors.set_initial_state(network, initial)
    report = predictors.report(network, step=step)
    if scale is not None:
        start = time.perf_counter()
        try:
            found = measure_at_scale(dm, network, model_twin(model), list(report.predictors), scale,
                                     initial_network(network, initial), _DTYPES[dtype], undefined=undefined_predictors(model))  # fmt: skip
        except OrbitbenchError as error:
            found = str(error).removeprefix("orbitbench: ")
        merge_at_scale(report.network, report.predictors, found, time.perf_counter() - start)
    return report


def predict_kernel(
    ckpt_path: Path | None = None,
    probe: ProbeOptions = ProbeOptions(),
    reg: float = 1e-10,
    dtype: str = "float64",
    source: str | None = None,
    data_dir: str | None = None,
    at_scale: bool = False,
    scale: ScaleOptions = ScaleOptions(),
) -> str:
    """How the kernel predictors (infinite, init, trained) predict a trained network's out-test accuracy: the table.

    Args:
        ckpt_path: a checkpoint written by `orbitbench fit` (e.g. runs/<name>/version_0/checkpoints/last.ckpt).
        probe: the probe's size and draw (`--probe.n_seeds 32 --probe.probe_digits_per_class 4 ...`), as
            the fit's `EmpiricalNTKCallback` options to reproduce its table.
        reg: ridge, times the kernel's trace.
        dtype: float64 or float32 kernels.
        source: override the checkpoint's data source (e.g. mnist5k).
        data_dir: override the checkpoint's data directory.
        at_scale: also regress every kernel on up to `--scale.points` points of the network's own
            training split and score it on every out-test digit (docs/THEORY.md §10).
        scale: the regression at scale (`--scale.points 16000 --scale.curve [1000,4000,16000]
            --scale.time_budget_s 60 ...`: the protocol's sizes).
    """
    if ckpt_path is None:  # an option, not a positional: spelled like `orbitbench validate --ckpt_path`
        raise OrbitbenchError("--ckpt_path is required: a checkpoint written by `orbitbench fit`")
    overrides = {k: v for k, v in (("source", source), ("data_dir", data_dir)) if v is not None}
    return measure_checkpoint(ckpt_path, probe, reg, dtype, overrides, scale if at_scale else None).table()
