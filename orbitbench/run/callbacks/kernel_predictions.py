"""`EmpiricalNTKCallback`: do kernels predict what the network does on the out-test split?

The measurement itself is Trainer-free (`orbitbench.theory.probe`, `orbitbench.theory.predictions`; from a
checkpoint: `orbitbench.run.predict_kernel.measure_checkpoint`); this callback only decides when to
measure, logs, and keeps the initial weights (the `init` predictor) in checkpoints.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models import KernelTwin, model_info
from orbitbench.theory.registry import predictor, predictor_names
from orbitbench.theory.predictions import KernelPredictors, PredictionReport
from orbitbench.run.record import KernelPredictions
from orbitbench.splits import PartialOrbits
from orbitbench.theory.probe import ProbeOptions, ProbeSet, draw_probe
from orbitbench.theory.at_scale import initial_network, measure_at_scale, merge_at_scale
from orbitbench.theory.regression import ScaleOptions

__all__ = ["EmpiricalNTKCallback", "model_twin", "network_of"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def network_of(pl_module: nn.Module) -> nn.Module:
    """The zoo network inside a LightningModule (`net` or `backbone`), or the module itself."""
    for name in ("net", "backbone"):
        candidate = getattr(pl_module, name, None)
        if isinstance(candidate, nn.Module):
            return candidate
    return pl_module


def model_twin(pl_module: nn.Module) -> KernelTwin | str:
    """The kernel twin the zoo declares for this LightningModule's backbone, or why there is none."""
    hparams = getattr(pl_module, "hparams", {}) or {}
    name = hparams.get("backbone")
    if not isinstance(name, str):
        return "not a zoo model (no backbone name in the module's hyperparameters)"
    return model_info(name).kernel_twin(**(hparams.get("backbone_kwargs") or {}))


def undefined_predictors(pl_module: nn.Module) -> dict[str, str]:
    """Predictors that do not describe a network trained by this module's method -> why.

    The kernel theory predicts a network trained on the labels alone; a method whose extra loss
    moves the weights elsewhere declares which predictors still apply (`MethodInfo.kernel_predictors`).
    """
    from orbitbench.methods import method_class

    name = (getattr(pl_module, "hparams", {}) or {}).get("method") or "supervised"
    info = method_class(name).info
    why = info.kernel_note or info.kernel_prediction or "no kernel prediction is defined"
    return {p: f"method {name!r}: {why}" for p in predictor_names() if p not in info.predictors()}


class EmpiricalNTKCallback(L.Callback):
    """Kernel predictions of out-test accuracy next to the network's own, at fit start, every
    `every_n_epochs` epochs and at the end of training (between measurements it does nothing).

    Predictors (`orbitbench.theory.predictions`): `infinite` (the analytic NTK of the model's declared
    kernel twin), `init` (empirical NTK at initialisation, with its linearised network) and
    `trained` (empirical NTK at the current weights). The fit summary prints them as a table
    (`summary_line`); loggers get every number as `ntk/<predictor>/<name>` and
    `ntk/network/<name>`; TensorBoard also the figure `ntk/predicted_vs_actual`.

    `record_summary()` (the run record's entry) and `history` items hold, stable names:
        probe: n_seeds, probe_digits_per_class, seed, n_poses, held_out_poses, leave_out_class,
               n_train_points, n_out_test_points, n_in_test_points
        network: out_test_acc, out_test_ci [lo, hi], in_test_acc, in_test_ci  (on the probe points)
        predictors.<infinite|init|trained>: {"undefined": reason} or
            spectral_out_test_acc, spectral_out_test_ci   the spectral rule, one-vs-many (THEORY §5)
            kappa, spearman, agreement, chance_agreement  the spectral rule vs the network per sample
            exact_out_test_acc, exact_out_test_ci         exact pair regression, same rule
            regression_out_test_acc, regression_out_test_ci, regression_in_test_acc,
            regression_in_test_ci, regression_kappa, regression_spearman, regression_agreement,
            regression_chance_agreement                   kernel regression on the training split
            spectral_error_mean, exact_error_mean, seconds
            init.linearized: the regression_* numbers of f0 + K (K + r)^-1 (y - f0)
            trained.kernel_drift: |K - K0| / |K0| of the regression kernel
            at the end of training only (docs/THEORY.md §10), kernel regression at scale:
            scale_out_test_acc, scale_out_test_ci, scale_in_test_acc, scale_in_test_ci,
            scale_kappa, scale_kappa_ci (bootstrap), scale_spearman, regression_m,
            regression_curve [{m, out_test, in_test, kappa}], scale_spread {m, out_test [2],
            kappa [2]}, scale_path (direct | orbit), scale_seconds
        network.scale: the network's out_test_acc, out_test_ci, in_test_acc, in_test_ci on the
            at-scale test points, and their counts
    Intervals are 95% Wilson intervals over seeds (in-test: over points); kappa is 0 for a
    predictor that agrees no more than chance, spearman null when either margin is constant.

    Args:
        every_n_epochs: measure after every this many training epochs (plus fit start and end).
        n_seeds: probe digits of the leave-out class (the out-test samples).
        probe_digits_per_class: probe digits of each other class for the spectral rule.
        train_per_class: training-split (image, pose) pairs per class for kernel regression (plus
            up to 6 training pairs of each leave-out seed: its observed poses).
        in_test_per_class: in-test pairs per class.
        reg: ridge of the spectral rule and of both regressions (times the kernel's trace).
        dtype: "float64" (docs/THEORY.md §4: precision matters) or "float32" for the kernels.
        chunk_size: inputs per forward/backward pass inside `empirical_ntk`.
        infinite_width: None: the `infinite` predictor when the model declares a twin; False: off;
            True: required (an error for models without one).
        figures: add the predicted-vs-actual figure to TensorBoard.
        seed: the probe draw.
        predictors: which of infinite, init, trained to compute (None: all). Leaving out `trained`
            skips the empirical NTK at every later measurement (a sweep that only needs the
            `infinite` and `init` predictions measures the costly kernel once).
        regression: also the kernel regression on the training split. Its per-sample factors hold
            every parameter once per class: for large generic models (ViT, MobileNet) on a CPU,
            `false` keeps the spectral rule only.
        regression_points: training points m of the at-scale regression of analytic twins at the
            end of training (capped at the training split; 0: no at-scale regression). The default
            keeps a short fit short; the protocol of docs/THEORY.md §10 uses 16000.
        regression_curve: nested sizes also solved below m (the curve of predictions against m).
        empirical_points: m of the empirical kernels (init, trained): one number, or `{init: 2500,
            trained: 2750}` per predictor (the others by the budget); null: the largest m whose
            estimated cost fits `time_budget_s`. That m depends on the machine's speed, so
            `leaderboard verify` re-runs a cell with the m its record holds.
        time_budget_s: seconds one empirical kernel's at-scale regression may take (estimated);
            0 (the default, a short fit stays short): the empirical kernels are measured at scale
            only with `empirical_points`. The protocol of docs/THEORY.md §10 uses 60.
        regression_test_points: in-test points scored at scale.
        regression_out_test_points: out-test points scored at scale (null, the default: every held-out
            pair; a number: a seeded sample of them, for twins whose kernel entries are costly).
        regression_exact: "auto" (the exact orbit solve where every pose is a pixel permutation
            and the kernel is invariant), "off", or "require" (an error where it does not apply).
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        n_seeds: int = 32,
        probe_digits_per_class: int = 4,
        train_per_class: int = 30,
        in_test_per_class: int = 10,
        reg: float = 1e-10,
        dtype: str = "float64",
        chunk_size: int = 256,
        infinite_width: bool | None = None,
        figures: bool = True,
        seed: int = 124,
        predictors: list[str] | None = None,
        regression: bool = True,
        regression_points: int = 2000,
        regression_curve: list[int] | None = None,
        empirical_points: int | dict[str, int] | None = None,
        time_budget_s: float = 0.0,
        regression_test_points: int = 2000,
        regression_exact: str = "auto",
        regression_out_test_points: int | None = None,
    ) -> None:
        counts = dict(every_n_epochs=every_n_epochs, n_seeds=n_seeds, probe_digits_per_class=probe_digits_per_class,
                      train_per_class=train_per_class, in_test_per_class=in_test_per_class, chunk_size=chunk_size)
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OrbitbenchError(f"EmpiricalNTKCallback: {name}={value!r}; accepted: a positive integer")
        if dtype not in _DTYPES:
            raise OrbitbenchError(f"EmpiricalNTKCallback: dtype={dtype!r}; accepted: {', '.join(_DTYPES)}")
        if not reg >= 0:
            raise OrbitbenchError(f"EmpiricalNTKCallback: reg={reg!r}; accepted: a number >= 0")
        self.every_n_epochs = every_n_epochs
        self.probe_options = ProbeOptions(n_seeds, probe_digits_per_class, train_per_class, in_test_per_class, seed)
        self.reg, self.dtype, self.chunk_size = float(reg), _DTYPES[dtype], chunk_size
        self.infinite_width, self.figures = infinite_width, figures
        chosen = list(predictor_names() if predictors is None else predictors)
        unknown = [p for p in chosen if p not in predictor_names()]
        if unknown or not chosen:
            raise OrbitbenchError(f"EmpiricalNTKCallback: predictors={predictors!r}; accepted: a non-empty "
                                  f"list of {', '.join(predictor_names())}")  # fmt: skip
        self.chosen, self.regression = chosen, regression
        if isinstance(regression_points, bool) or not isinstance(regression_points, int) or regression_points < 0:
            raise OrbitbenchError(f"EmpiricalNTKCallback: regression_points={regression_points!r}; accepted: an "
                                  "integer >= 0 (0: no regression at scale)")  # fmt: skip
        curve = [500, 2000] if regression_curve is None else list(regression_curve)
        try:
            self.scale_options = None if regression_points == 0 else ScaleOptions(
                points=regression_points, curve=tuple(curve), empirical_points=empirical_points,
                time_budget_s=time_budget_s, in_test_points=regression_test_points, reg=float(reg),
                exact=regression_exact, out_test_points=regression_out_test_points)  # fmt: skip
        except OrbitbenchError as error:
            raise OrbitbenchError(f"EmpiricalNTKCallback: {str(error).removeprefix('orbitbench: ')}") from None
        self._undefined: dict[str, str] = {}
        self._twin: KernelTwin | str = "not set up"
        self.probe: ProbeSet | None = None
        self.predictors: KernelPredictors | None = None
        self.history: list[dict[str, Any]] = []
        self.initial_state: dict[str, torch.Tensor] | None = None
        self._last_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._last_step, self.history, self.initial_state = None, [], None  # a checkpoint may restore them next
        dm = trainer.datamodule
        if not isinstance(dm, PartialOrbits):
            raise OrbitbenchError(
                "EmpiricalNTKCallback needs an orbitbench OrbitDataModule (RotatedMNIST, TranslatedMNIST)"
            )
        if self.probe is None:
            self.probe = draw_probe(dm, self.probe_options)
        twin = model_twin(pl_module) if self.infinite_width is not False else "switched off (infinite_width=false)"
        if self.infinite_width and isinstance(twin, str):
            raise OrbitbenchError(f"EmpiricalNTKCallback: infinite_width=true, but {twin}")
        self._undefined, self._twin = undefined_predictors(pl_module), twin
        self.predictors = KernelPredictors(self.probe, twin, self.reg, self.dtype, self.chunk_size,
                                           self.chosen, self.regression, self._undefined)  # fmt: skip

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        network = network_of(pl_module)
        if self.initial_state is None:  # not resumed: these are the initial weights
            self.initial_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
            self.predictors.set_initial(network)
            self._measure(trainer, pl_module, "fit_start")
        else:  # resumed: the initial weights came with the checkpoint (global step not yet restored)
            self.predictors.set_initial_state(network, self.initial_state)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._measure(trainer, pl_module, "epoch")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_train_end, not on_fit_end: the model is still on its training device here.
        if self._last_step != trainer.global_step:
            self._measure(trainer, pl_module, "fit_end")
        if self.scale_options is not None and trainer.is_global_zero and self.history:
            self._measure_at_scale(trainer, pl_module)

    def _measure_at_scale(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Every chosen predictor's regression at scale, merged into the last measurement."""
        network = network_of(pl_module)
        start = time.perf_counter()
        last = self.history[-1]
        try:
            found = measure_at_scale(trainer.datamodule, network, self._twin, self.chosen, self.scale_options,
                                     initial_network(network, self.initial_state), self.dtype, self.chunk_size,
                                     self._undefined)  # fmt: skip
        except OrbitbenchError as error:  # the fit itself is done: keep it, say why there is no number
            merge_at_scale(last["network"], last["predictors"], str(error).removeprefix("orbitbench: "), 0.0)
            return
        merge_at_scale(last["network"], last["predictors"], found, time.perf_counter() - start)
        metrics = {f"ntk/{name}/{key}": float(value) for name, entry in found["predictors"].items()
                   for key, value in entry.items() if key in SCALE_SCALARS and value is not None}  # fmt: skip
        metrics.update({f"ntk/network/scale_{k}": v for k, v in found["network"].items() if isinstance(v, float)})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            add_figure = getattr(getattr(logger, "experiment", None), "add_figure", None)
            if self.figures and add_figure is not None:
                add_figure("ntk/at_scale", at_scale_figure(last), trainer.global_step)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        if not trainer.is_global_zero:  # no collectives inside: other ranks simply skip it
            return
        start = time.perf_counter()
        report = self.predictors.report(network_of(pl_module), trainer.global_step, trainer.current_epoch,
                                        at_initial=when == "fit_start")  # fmt: skip
        seconds = time.perf_counter() - start
        self._last_step = trainer.global_step
        self.history.append({**report.as_dict(), "when": when, "seconds": seconds})
        metrics = {f"ntk/{k}": v for k, v in report.scalars().items() if not math.isnan(v)}
        metrics["ntk/seconds"] = seconds
        trained = report.predictors.get("trained", {})
        if "spectral_out_test_acc" in trained:  # a short TensorBoard alias; the record keeps the full names
            metrics["ntk/spectral_accuracy"] = trained["spectral_out_test_acc"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            add_figure = getattr(getattr(logger, "experiment", None), "add_figure", None)
            if self.figures and add_figure is not None:
                add_figure("ntk/predicted_vs_actual", predicted_vs_actual_figure(self.history), trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        """The initial weights and the history travel with checkpoints: `init` survives a resume."""
        return {"initial_state": self.initial_state, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_state = state_dict.get("initial_state")
        self.history = list(state_dict.get("history", []))

    def last_report(self) -> PredictionReport | None:
        if not self.history:
            return None
        last = self.history[-1]
        return PredictionReport(last["probe"], last["network"], last["predictors"], last["step"], last["epoch"])

    def kernel_predictions(self) -> KernelPredictions | None:
        """The last measurement, typed, for the run record's `predictions` (names in the class docstring)."""
        report = self.last_report()
        return None if report is None else KernelPredictions.model_validate(report.as_dict())

    def hparam_metric_names(self) -> list[str]:
        """The predicted out-test accuracies (scalar tags), as TensorBoard HPARAMS metrics (`orbitbench.run.callbacks.hparams`)."""
        return [f"ntk/{name}/spectral_out_test_acc" for name in self.chosen]

    def scalar_layout(self) -> dict[str, dict[str, list]]:
        """Custom-scalars charts, one category per predictor: its predictions overlaid on the network's."""
        network = [r"^ntk/network/out_test_acc$"]
        layout = {}
        for name in self.chosen:
            tag = f"^ntk/{name}/"
            layout[f"ntk {name}"] = {
                "predicted vs network out-test accuracy": ["Multiline", [*network, f"{tag}spectral_out_test_acc$",
                                                                         f"{tag}(linearized/)?regression_out_test_acc$"]],
                "per-sample agreement with the network": ["Multiline", [f"{tag}(regression_)?(kappa|spearman)$"]],
            }
        return layout

    def summary_line(self) -> str:
        """Lines for the printed fit summary: the predictor table of the last measurement."""
        report = self.last_report()
        if report is None:
            return "  kernel predictions  no measurement"
        seconds = sum(h["seconds"] for h in self.history) / len(self.history)
        return (report.table() + f"\n  ({len(self.history)} measurements, {seconds:.2f} s each on average)\n"
                + "\n".join(f"  {line}" for line in TABLE_LEGEND))


TABLE_LEGEND = (
    "how to read it: each row predicts the network's accuracy on the probe's upright leave-out digits",
    "infinite    the analytic NTK of the network's infinite-width twin: the theory, no training at all",
    "init        the network's own empirical NTK at initialisation (what the theory describes)",
    "trained     the empirical NTK at the final weights: features learnt from these labels (another question)",
    "out-test    the predicted accuracy; spectral rule = the paper's Eq. 7, regression = kernel regression",
    "            0.000 / 1.000: the kernel calls every probe digit wrong / right (its kappa is then 0 by definition)",
    "network     the trained network on these probe points only: a sample of the out-test split, so it",
    "            differs from the headline out-test above (every out-test sample); predictors are judged on it",
    "kappa       Cohen's kappa of the predictor's right/wrong calls vs the network's, per sample:",
    "            0 = no better than chance agreement at the same rates, 1 = the same samples fail",
    "Spearman    rank correlation of the predictor's and the network's per-sample margins (- : a constant margin)",
    "linearised  the network linearised around its initial weights: f0 + K (K + r)^-1 (y - f0), K the initial NTK",
)


SCALE_SCALARS = ("scale_out_test_acc", "scale_in_test_acc", "scale_kappa", "scale_spearman", "regression_m",
                 "scale_seconds")  # fmt: skip


def at_scale_figure(measurement: dict[str, Any]):
    """Predicted out-test accuracy (solid) and kappa (dashed) against the regression's m, per predictor,
    with the network's out-test accuracy on the same points."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    network = measurement["network"].get("scale", {})
    if "out_test_acc" in network:
        axes.axhline(network["out_test_acc"], color="black", label="network out-test")
    for name, entry in measurement["predictors"].items():
        curve = entry.get("regression_curve")
        if not curve:
            continue
        m = [c["m"] for c in curve]
        color = predictor(name).color if name in predictor_names() else None
        axes.plot(m, [c["out_test"] for c in curve], "o-", color=color, ms=3, label=f"{name} out-test")
        axes.plot(m, [c["kappa"] for c in curve], "s--", color=color, ms=3, label=f"{name} kappa")
    axes.set(xscale="log", xlabel="regression training points m", ylabel="out-test accuracy / kappa",
             ylim=(-0.2, 1.02), title="kernel regression at scale")  # fmt: skip
    axes.legend(fontsize=6, ncol=2)
    return figure


def predicted_vs_actual_figure(history: list[dict[str, Any]]):
    """Predicted (spectral rule: solid, regression: dashed) and the network's out-test accuracy over steps."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    steps = [h["step"] for h in history]
    net = [h["network"]["out_test_acc"] for h in history]
    low, high = zip(*[h["network"]["out_test_ci"] for h in history])
    axes.fill_between(steps, low, high, color="black", alpha=0.1)
    axes.plot(steps, net, "o-", color="black", label="network")
    for name in predictor_names():  # each registered predictor in its own colour
        color = predictor(name).color
        entries = [h["predictors"].get(name, {}) for h in history]
        if any("undefined" in e or not e for e in entries):
            continue
        axes.plot(steps, [e["spectral_out_test_acc"] for e in entries], "s-", color=color, ms=3, label=f"{name} (Eq. 7)")
        if any("regression_out_test_acc" not in e for e in entries):
            continue
        axes.plot(steps, [e["regression_out_test_acc"] for e in entries], "^--", color=color, ms=3,
                  label=f"{name} (regression)")  # fmt: skip
    axes.set(xlabel="global step", ylabel="out-test accuracy (probe seeds)", ylim=(-0.02, 1.02),
             title="kernel-predicted vs actual out-test accuracy")  # fmt: skip
    axes.legend(fontsize=6, ncol=2)
    return figure
