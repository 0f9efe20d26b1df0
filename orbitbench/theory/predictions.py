"""Kernel predictors of a network's out-test accuracy, and how well they predict it (Trainer-free).

The predictors are registered in `orbitbench.theory.registry` (name, how measured, how shown);
this module measures them. Three are built in, named for what they are (docs/THEORY.md §4):

- `infinite`: the analytic NTK of the model's declared kernel twin (`orbitbench.models.model_info(name).kernel_twin()`),
  the paper's prediction; undefined for models without a twin;
- `init`: the network's empirical NTK at initialisation, plus the linearised network
  `f0 + K (K + r)^-1 (y - f0)` it defines (lazy training; reported as `init.linearized`);
- `trained`: the empirical NTK at the current weights (the after-kernel). Its features were learnt
  from the very labels it is asked about, so it is a description of the trained network more
  than an independent prediction.

Each gives (a) the paper's spectral rule on the probe orbits (Eq. 7 / App. A.1 at the held-out
poses, pair-averaged over the other seeds, one-vs-many over classes, docs/THEORY.md §5) and its
exact counterpart (pair regression leaving out only the held-out poses), and (b) kernel
regression on the network's own task (one-hot targets, training-split points of the probe) at the
out-test and in-test probe points. `orbitbench.theory.agreement` scores both against the network.

What no kernel here matches: the training itself (Adam on cross-entropy with dropout, not gradient
flow on squared error) and, for `infinite`, the finite width (tests/test_twins.py).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from orbitbench.theory import spectral
from orbitbench.theory.agreement import agreement, wilson_interval
from orbitbench.theory.registry import KernelContext, predictor, predictor_names
from orbitbench.models import KernelTwin
from orbitbench.theory.probe import ProbeKernels, ProbeSet, empirical_gram, network_outputs, probe_kernels
from orbitbench.theory.twins import twin_kernel

__all__ = ["KernelPredictors", "PredictionReport", "linearized_prediction"]


@dataclass
class _Raw:
    """One predictor's per-sample numbers on the probe."""

    spectral_margin: Tensor  # [S, H]: min over other classes of the seed-averaged 1 - spectral error
    exact_margin: Tensor  # [S, H]: the same from exact pair regression
    regression: Tensor | None  # [U, C] kernel-regression outputs at the test points (out-test, then in-test)
    spectral_error_mean: float
    exact_error_mean: float
    linearized: Tensor | None = None  # [U, C] (init only)
    kernel: Tensor | None = None  # regression kernel [R+U, R], kept for the drift of the trained one
    seconds: float = 0.0


def _margins(outputs: Tensor, labels: Tensor) -> Tensor:
    """Output of the true class minus the largest other output: [U, C], [U] -> [U] (> 0: correct)."""
    true = outputs.gather(1, labels[:, None]).squeeze(1)
    others = outputs.scatter(1, labels[:, None], -math.inf)
    return true - others.max(1).values


def _solve(k_train: Tensor, rhs: Tensor, reg: float) -> Tensor:
    """(K + r I)^-1 rhs with the protocol's ridge r = reg * trace(K) (docs/THEORY.md §2)."""
    ridge = reg * torch.diagonal(k_train).sum()
    return torch.linalg.solve(k_train + ridge * torch.eye(len(k_train), dtype=k_train.dtype), rhs)


def linearized_prediction(
    k_train: Tensor, k_test: Tensor, targets: Tensor, f0_train: Tensor | None = None, f0_test: Tensor | None = None,
    lr_time: float | None = None, reg: float = 1e-10,
) -> Tensor:
    """The linearised network after gradient flow on 0.5 * mean squared error (lazy training).

    `f_t(x*) = f0(x*) + K(x*, X) K^-1 (I - exp(-lr_time K / n)) (y - f0(X))`, `lr_time` = learning
    rate x steps; None: trained to convergence, `K (K + r)^-1 (y - f0)`. k_train [n, n],
    k_test [m, n], targets and f0 [n, ...] / [m, ...] -> [m, ...].
    """
    residual = targets - (0.0 if f0_train is None else f0_train)
    if lr_time is None:
        out = k_test @ _solve(k_train, residual, reg)
    else:
        eig, vectors = torch.linalg.eigh(k_train)  # K = V diag(eig) V^T
        eig = eig.clamp_min(0.0)
        # (1 - exp(-lr_time eig / n)) / eig, -> lr_time / n as eig -> 0
        rate = lr_time / len(k_train)
        gain = torch.where(eig * rate > 1e-12, -torch.expm1(-rate * eig) / eig.clamp_min(1e-300), rate)
        flat = residual.reshape(len(k_train), -1)
        out = (k_test @ (vectors @ (gain[:, None] * (vectors.T @ flat)))).reshape(len(k_test), *residual.shape[1:])
    return out + (0.0 if f0_test is None else f0_test)


@contextmanager
def _unfilled_memory() -> Iterator[None]:
    """Deterministic mode (the CLI's default) fills every new tensor with NaN, a debugging aid that
    makes the kernel products ~10x slower; results do not depend on it, so it is off inside."""
    flag = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = flag


class KernelPredictors:
    """Every registered predictor on one probe set. `infinite`, `init` and other `when="once"`
    predictors never change during training, so they are computed once (`init` from the network
    `set_initial` is given); `trained` and other `when="every"` ones at every `report`."""

    def __init__(self, probe: ProbeSet, twin: KernelTwin | str, reg: float = 1e-10,
                 dtype: torch.dtype = torch.float64, chunk_size: int = 256,
                 predictors: Sequence[str] | None = None, regression: bool = True,
                 undefined: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """`undefined`: predictor -> why it does not describe this network (its training method)."""
        self.probe, self.twin, self.reg, self.dtype, self.chunk_size = probe, twin, reg, dtype, chunk_size
        undefined = dict(undefined or {})
        self.names = predictor_names()
        self.measured = frozenset(self.names if predictors is None else predictors) - set(undefined)  # others: not measured
        self.regression = regression  # False: the spectral rule only (no regression_* numbers)
        self._reasons = {name: undefined.get(name, f"not measured (predictors option without '{name}')")
                         for name in self.names if name not in self.measured}  # fmt: skip
        self._fixed: dict[str, _Raw | str] = {name: reason for name, reason in self._reasons.items()
                                              if name in ("infinite", "init")}  # fmt: skip
        if isinstance(twin, str):
            self._fixed.setdefault("infinite", twin)
        self._f0: Tensor | None = None

    # ---- kernels -> raw predictions ----------------------------------------------------------

    def _raw(self, kernels: ProbeKernels, f0: Tensor | None = None) -> _Raw:
        probe, reg = self.probe, self.reg
        held = list(probe.held_out_poses)
        circular = spectral.circularize(kernels.pairs)
        if len(held) == 1:  # a circulant kernel is pose-invariant: Eq. 7 itself
            err = spectral.spectral_error(circular, reg)[:, None]  # [P, 1]
        else:  # several missing points of orbit a (App. A.1): signed errors
            err = spectral.missing_errors(circular, [2 * p for p in held], reg)  # [P, H]
        labels = spectral.interleaved_labels(kernels.pairs.shape[-1])
        exact = spectral.kernel_regression(kernels.pairs, labels, [2 * p for p in held], reg)  # [P, H]
        shape = (len(probe.other_classes), probe.n_seeds, probe.probe_digits_per_class, len(held))  # [C-1, S, T, H]
        one_vs_many = lambda pred: pred.reshape(shape).mean(2).min(0).values  # noqa: E731  [S, H]

        spectral_only = _Raw(one_vs_many(1.0 - err), one_vs_many(exact), None, float(err.abs().mean()),
                             float((1.0 - exact).abs().mean()))  # fmt: skip
        if kernels.regression is None:
            return spectral_only
        r = len(probe.train_labels)
        k = kernels.regression
        targets = torch.nn.functional.one_hot(probe.train_labels, probe.num_classes).double()  # [R, C]
        regression = k[r:] @ _solve(k[:r], targets, reg)  # [U, C]
        linearized = None
        if f0 is not None:  # lazy training: f0 + K (K + r)^-1 (y - f0)
            linearized = linearized_prediction(k[:r], k[r:], targets, f0[:r], f0[r:], reg=reg)
        return dataclasses.replace(spectral_only, regression=regression, linearized=linearized, kernel=k)

    def _empirical(self, network: nn.Module, f0: Tensor | None = None) -> _Raw:
        start = time.perf_counter()
        with _unfilled_memory():
            gram = empirical_gram(network, self.dtype, self.chunk_size)
            raw = self._raw(probe_kernels(self.probe, gram, self.regression), f0)
        raw.seconds = time.perf_counter() - start
        return raw

    def set_initial(self, network: nn.Module) -> None:
        """Compute the `init` predictor from `network` at its initial weights."""
        if "init" not in self.measured:
            return
        self._f0 = network_outputs(network, self.probe)
        self._fixed["init"] = self._empirical(network, self._f0)

    def set_initial_state(self, network: nn.Module, state: dict[str, Tensor] | None) -> None:
        """`set_initial` from a saved initial state dict (a copy of `network` is loaded with it)."""
        if "init" not in self.measured:
            return
        if state is None:
            self._fixed["init"] = "the initial weights were not recorded (train with EmpiricalNTKCallback)"
            return
        initial = copy.deepcopy(network)
        initial.load_state_dict(state)
        self.set_initial(initial)

    def _infinite(self) -> _Raw | str:
        if "infinite" not in self._fixed:
            start = time.perf_counter()
            gram = lambda images, output, images2=None: twin_kernel(self.twin, images, images2)  # noqa: E731 (scale-free)
            with _unfilled_memory():
                raw = self._raw(probe_kernels(self.probe, gram, self.regression))
            raw.seconds = time.perf_counter() - start
            self._fixed["infinite"] = raw
        return self._fixed["infinite"]

    def _registered(self, name: str, network: nn.Module) -> _Raw | str:
        """A predictor measured through its registered kernel (`orbitbench.theory.registry`)."""
        if name not in self.measured:
            return self._reasons[name]
        spec = predictor(name)
        if spec.when == "once" and name in self._fixed:
            return self._fixed[name]
        start = time.perf_counter()
        gram = spec.kernel(KernelContext(network, self.twin))
        if isinstance(gram, str):
            raw: _Raw | str = gram
        else:
            with _unfilled_memory():
                raw = self._raw(probe_kernels(self.probe, gram, self.regression))
            raw.seconds = time.perf_counter() - start
        if spec.when == "once":
            self._fixed[name] = raw
        return raw

    # ---- the report ----------------------------------------------------------------------------

    def report(self, network: nn.Module, step: int = 0, epoch: int = 0, at_initial: bool = False) -> PredictionReport:
        """Every predictor against `network` at its current weights (`at_initial`: the weights given
        to `set_initial`, whose kernel is then reused for `trained`)."""
        probe = self.probe
        start = time.perf_counter()
        outputs = network_outputs(network, probe)[len(probe.train_labels):]  # [U, C]
        out_labels = torch.full((probe.n_seeds * len(probe.held_out_poses),), probe.leave_out_class)
        labels = torch.cat([out_labels, probe.in_test_labels])
        net_margin = _margins(outputs, labels)
        network_seconds = time.perf_counter() - start
        initial = self._fixed.get("init")
        trained: _Raw | str
        if "trained" not in self.measured:
            trained = self._reasons["trained"]
        elif at_initial and isinstance(initial, _Raw):
            trained = dataclasses.replace(initial, linearized=None)
        else:
            trained = self._empirical(network)
        built_in = {"infinite": self._infinite, "init": lambda: self._fixed.get("init", "no initial weights"),
                    "trained": lambda: trained}  # fmt: skip
        raws = {name: built_in[name]() if name in built_in else self._registered(name, network) for name in self.names}
        init = raws.get("init", "not registered")
        drift = None if isinstance(init, str) or isinstance(trained, str) or init.kernel is None else float((trained.kernel - init.kernel).norm() / init.kernel.norm())

        u_out = len(out_labels)
        s = probe.n_seeds
        net_out = (net_margin[:u_out] > 0).reshape(s, -1)  # [S, H]
        network = {"out_test_acc": float(net_out.double().mean()), "in_test_acc": float((net_margin[u_out:] > 0).double().mean()),
                   "seconds": network_seconds}  # fmt: skip
        network["out_test_ci"] = list(wilson_interval(network["out_test_acc"], s))
        network["in_test_ci"] = list(wilson_interval(network["in_test_acc"], len(probe.in_test_labels)))

        def scores(margin_out: Tensor, margin_in: Tensor | None, prefix: str) -> dict[str, Any]:
            acc = float((margin_out > 0).double().mean())
            out = {f"{prefix}out_test_acc": acc, f"{prefix}out_test_ci": list(wilson_interval(acc, s))}
            if margin_in is not None:
                acc_in = float((margin_in > 0).double().mean())
                out.update({f"{prefix}in_test_acc": acc_in,
                            f"{prefix}in_test_ci": list(wilson_interval(acc_in, len(margin_in)))})  # fmt: skip
            score = agreement(margin_out.flatten() > 0, net_out.flatten(), margin_out.flatten(), net_margin[:u_out])
            return {**out, **score.as_dict("" if prefix == "spectral_" else prefix)}

        predictors: dict[str, dict[str, Any]] = {}
        for name, raw in raws.items():
            if isinstance(raw, str):
                predictors[name] = {"undefined": raw}
                continue
            exact = float((raw.exact_margin > 0).double().mean())
            entry = {**scores(raw.spectral_margin, None, "spectral_"),
                     "exact_out_test_acc": exact, "exact_out_test_ci": list(wilson_interval(exact, s)),
                     "spectral_error_mean": raw.spectral_error_mean, "exact_error_mean": raw.exact_error_mean,
                     "seconds": raw.seconds}  # fmt: skip
            if raw.regression is not None:
                margin = _margins(raw.regression, labels)
                entry.update(scores(margin[:u_out], margin[u_out:], "regression_"))
            if raw.linearized is not None:
                lazy = _margins(raw.linearized, labels)
                entry["linearized"] = scores(lazy[:u_out], lazy[u_out:], "regression_")
            predictors[name] = entry
        if drift is not None:
            predictors["trained"]["kernel_drift"] = drift
        return PredictionReport(probe.describe(), network, predictors, step, epoch)


@dataclass
class PredictionReport:
    """One measurement: the network's own accuracies on the probe and every predictor's numbers.

    `as_dict()` is the run record's `predictions` entry (names documented on EmpiricalNTKCallback).
    """

    probe: dict[str, Any]
    network: dict[str, Any]
    predictors: dict[str, dict[str, Any]]
    step: int = 0
    epoch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "network": self.network, "predictors": self.predictors, "step": self.step,
                "epoch": self.epoch}  # fmt: skip

    def scalars(self) -> dict[str, float]:
        """Flat `network/...`, `<predictor>/...` numbers for loggers (intervals and text left out)."""
        flat = {f"network/{k}": v for k, v in self.network.items() if isinstance(v, float)}
        for name, entry in self.predictors.items():
            for key, value in entry.items():
                if isinstance(value, dict):
                    flat.update({f"{name}/{key}/{k}": v for k, v in value.items() if isinstance(v, float)})
                elif isinstance(value, float):
                    flat[f"{name}/{key}"] = value
        return flat

    def table(self) -> str:
        """The predictor x (predicted out-test [95% CI], in-test, kappa, Spearman) table, network on top."""
        p = self.probe
        head = (f"  kernel predictions on {p['n_seeds']} leave-out seeds x {len(p['held_out_poses'])} held-out "
                f"pose(s) (class {p['leave_out_class']}; {p['probe_digits_per_class']} seeds per other class, "
                f"{p['n_train_points']} regression points, {p['n_in_test_points']} in-test)")  # fmt: skip
        rows = [head, f"  {'':18}{'spectral rule (Eq. 7)':<38}| kernel regression on the training split",
                f"  {'predictor':<18}{'out-test [95% CI]':<22}{'kappa':>7}{'Spearman':>9} | "
                f"{'out-test [95% CI]':<22}{'in-test':>8}{'kappa':>7}{'Spearman':>9}"]  # fmt: skip
        net = self.network
        acc = f"{_ci(net['out_test_acc'], net['out_test_ci']):<22}"
        rows.append(f"  {'network':<18}{acc}{'-':>7}{'-':>9} | {acc}{net['in_test_acc']:>8.3f}{'-':>7}{'-':>9}")
        for name, entry in self.predictors.items():
            if "undefined" in entry:
                rows.append(f"  {name:<18}undefined: {entry['undefined']}")
                continue
            spec = f"{_ci(entry['spectral_out_test_acc'], entry['spectral_out_test_ci']):<22}"
            spec += f"{_num(entry['kappa']):>7}{_num(entry['spearman']):>9}"
            rows.append(f"  {name:<18}{spec} | {_regression(entry)}")
            if "linearized" in entry:
                rows.append(f"  {'  linearised':<18}{'-':<22}{'':>16} | {_regression(entry['linearized'])}")
        return "\n".join(rows + _scale_rows(self.network, self.predictors))


def _scale_rows(network: dict[str, Any], predictors: dict[str, dict[str, Any]]) -> list[str]:
    """The at-scale block of the table (docs/THEORY.md §10): empty when it was not measured."""
    net = network.get("scale")
    if not net:
        return []
    if "undefined" in net:
        return [f"  kernel regression at scale: not measured ({net['undefined']})"]
    rows = [f"  kernel regression at scale (the network's last weights; {net['n_out_test_digits']} out-test digits, "
            f"{net['n_in_test_points']} in-test points, nested samples of the {net['n_train_split']}-pair training split)",
            f"  {'predictor':<18}{'out-test [95% CI]':<22}{'in-test':>8}  {'kappa [95% CI]':<20}{'m':>7}  "
            f"{'path':<7}{'spread (2 draws)':<20}{'s':>6}",
            f"  {'network':<18}{_ci(net['out_test_acc'], net['out_test_ci']):<22}{net['in_test_acc']:>8.3f}"]  # fmt: skip
    for name, entry in predictors.items():
        if "scale_out_test_acc" not in entry:
            continue
        spread = entry["scale_spread"]
        kappa = f"{_num(entry['scale_kappa'])} [{entry['scale_kappa_ci'][0]:.2f}, {entry['scale_kappa_ci'][1]:.2f}]"
        rows.append(f"  {name:<18}{_ci(entry['scale_out_test_acc'], entry['scale_out_test_ci']):<22}"
                    f"{entry['scale_in_test_acc']:>8.3f}  {kappa:<20}{entry['regression_m']:>7}  {entry['scale_path']:<7}"
                    f"{'m=%d: %.3f/%.3f' % (spread['m'], *spread['out_test']):<20}{entry['scale_seconds']:>6.0f}")  # fmt: skip
    return rows


def _ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _regression(entry: dict[str, Any]) -> str:
    if "regression_out_test_acc" not in entry:
        return "not computed (regression=false)"
    return (f"{_ci(entry['regression_out_test_acc'], entry['regression_out_test_ci']):<22}"
            f"{entry['regression_in_test_acc']:>8.3f}{_num(entry['regression_kappa']):>7}"
            f"{_num(entry['regression_spearman']):>9}")  # fmt: skip
