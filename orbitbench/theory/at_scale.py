"""Every predictor's regression at scale in one measurement (docs/THEORY.md §10); Trainer-free.

Analytic twins regress on a fixed `points` (16,000 by default); empirical kernels on the largest m
whose estimated cost fits `time_budget_s` (or `empirical_points`). Their multi-output kernel is the
class-averaged NTK of the centred logits times the identity, `(1/C) sum_k Theta_kk (x) I_C`: the
infinite-width form, whose finite-width cross-class blocks are left out.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from orbitbench.models import KernelTwin
from orbitbench.errors import OrbitbenchError
from orbitbench.splits import PartialOrbits
from orbitbench.theory.orbit_solve import check_exact, orbit_digits, orbit_regression, orbits_for_points
from orbitbench.theory.regression import (Kernels, ScaleOptions, ScaleSample, curve_and_spread, draw_scale,
                                          network_scores, ridge_solve_, set_network)  # fmt: skip
from orbitbench.theory.registry import KernelContext, predictor
from orbitbench.theory.regression_cache import network_identity
from orbitbench.theory.scale_kernels import EmpiricalFactors, twin_gram

__all__ = ["affordable_points", "measure_at_scale"]


def twin_kernels(twin: KernelTwin) -> tuple[Kernels, Any]:
    """(train, test) -> (K, K_test) and the pairwise Gram function of the twin."""
    return (lambda tr, te: (twin_gram(twin, tr), twin_gram(twin, te, tr))), (lambda a, b=None: twin_gram(twin, a, b))


def empirical_kernels(network: nn.Module, dtype: torch.dtype = torch.float64, chunk_size: int = 256) -> tuple[Kernels, Any]:
    """The same from the network's class-averaged empirical NTK (structured factors, computed once per set)."""

    cached: list[tuple[Tensor, EmpiricalFactors]] = []  # (the scored points, their factors)

    def kernels(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
        # The scored points are the same tensor in every call (timing probes, curve, second draw):
        # their factors, a call's fixed cost, are made once (held with the tensor: identity is safe).
        if not cached or cached[0][0] is not test:
            cached[:] = [(test, EmpiricalFactors(network, test, dtype, chunk_size))]
        left = EmpiricalFactors(network, train, dtype, chunk_size)
        return left.gram(), cached[0][1].gram(left)

    kernels.reuses_test_points = True  # type: ignore[attr-defined]  (affordable_points: fixed cost paid once)

    def gram(a: Tensor, b: Tensor | None = None) -> Tensor:
        left = EmpiricalFactors(network, a, dtype, chunk_size)
        return left.gram(None if b is None else EmpiricalFactors(network, b, dtype, chunk_size))

    return kernels, gram


def registered_kernels(gram_fn: Any) -> tuple[Kernels, Any]:
    """The same from a registered predictor's Gram function `(images, output, images2=None)`."""
    return ((lambda tr, te: (gram_fn(tr, "centred").double().cpu(), gram_fn(te, "centred", tr).double().cpu())),
            (lambda a, b=None: gram_fn(a, "centred", b).double().cpu()))  # fmt: skip


def affordable_points(kernels: Kernels, sample: ScaleSample, options: ScaleOptions, cap: int,
                      probes: tuple[int, int] = (250, 500)) -> int:  # fmt: skip
    """The largest m (at most `cap`) whose estimated cost fits the time budget, the timing probes
    included. Two probe sizes separate a kernel call's fixed cost (the test points' own work, e.g.
    their Jacobian factors) from its cost per entry (m^2 / 2 + U m), unless the kernels make the test
    points' work once (`reuses_test_points`: then the second probe is all per entry); a Cholesky grows as m^3; the
    second draw at the spread size is counted (`curve_and_spread`)."""
    small, large = min(probes[0], cap), min(probes[1], cap)
    entries = lambda m: m * m / 2 + len(sample.test_images) * m  # noqa: E731
    begin = time.perf_counter()
    seconds = []
    for probe in (small, large):
        start = time.perf_counter()
        k, _ = kernels(sample.train_images(probe), sample.test_images)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    ridge_solve_(k, sample.train_targets(large), 1e-6)
    cube_rate = (time.perf_counter() - start) / large**3
    entry_rate = max(seconds[1] - seconds[0], 0.0) / max(entries(large) - entries(small), 1.0)
    fixed = max(seconds[1] - entry_rate * entries(large), 0.0)
    if getattr(kernels, "reuses_test_points", False):  # the first probe paid the fixed cost for all calls
        entry_rate, fixed = seconds[1] / entries(large), 0.0
    elif entry_rate == 0.0:  # too fast, or too noisy, to separate: all of it per entry
        entry_rate, fixed = seconds[1] / entries(large), 0.0
    left = options.time_budget_s - (time.perf_counter() - begin)
    one = lambda m: fixed + entry_rate * entries(m) + cube_rate * m**3  # noqa: E731

    def cost(m: int) -> float:
        below = [c for c in options.sizes(m) if c < m]
        spread = min(options.spread_points or (below[-1] if below else m), m)
        return one(m) + 2 * one(spread) * (spread < m) + one(spread) * (spread == m)

    steps = [m for m in range(small, cap + 1, 250)] + [cap]
    return max([m for m in steps if cost(m) <= left] or [small])


def _orbit_path(gram: Any, sample: ScaleSample, options: ScaleOptions) -> Any:
    """The exact orbit solve as `(sizes, draw) -> {training points: outputs}`, or why not (a string)."""
    dm = sample.dm
    digits = [orbit_digits(dm, options.seed, draw) for draw in (0, 1)]
    why = check_exact(gram, dm, digits[0])
    if why is not None:
        return why

    def solve(sizes: Sequence[int], draw: int) -> dict[int, Tensor]:
        orbits = sorted({orbits_for_points(dm, digits[draw], max(1, m)) for m in sizes})
        return orbit_regression(gram, dm, digits[draw], orbits, sample.test_images, options.reg)

    return solve


def _one(name: str, kernels: Kernels, gram: Any, sample: ScaleSample, m: int, options: ScaleOptions,
         exact_allowed: bool, identity: str | None = None) -> dict[str, Any]:  # fmt: skip
    orbit, note = None, None
    if options.exact != "off" and exact_allowed:
        found = _orbit_path(gram, sample, options)
        if isinstance(found, str):
            if options.exact == "require":
                raise OrbitbenchError(f"regression at scale, predictor {name}: exact=require, but {found}")
            note = found
        else:
            orbit = found
    entry = curve_and_spread(kernels, sample, m, options, orbit, identity)
    entry["scale_path"] = "orbit" if orbit is not None else "direct"
    if note is not None and options.exact == "auto" and int(sample.dm.n_poses) in (2, 4):
        entry["scale_path_note"] = note
    return entry


def measure_at_scale(dm: PartialOrbits, network: nn.Module, twin: KernelTwin | str, names: Sequence[str],
                     options: ScaleOptions, initial: nn.Module | None = None, dtype: torch.dtype = torch.float64,
                     chunk_size: int = 256, undefined: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """{"sample": ..., "network": ..., "predictors": {name: entry}} for the predictors `names`.

    `network`: at its current weights (the verdicts the kernels are judged against, and `trained`);
    `initial`: the same network at its initial weights (`init`; None: undefined).
    """
    undefined = dict(undefined or {})
    sample = draw_scale(dm, options)
    set_network(sample, network)
    out: dict[str, Any] = {}
    skipped: list[str] = []
    cap = min(options.points, sample.n_train)
    for name in names:
        if name in undefined:
            out[name] = {"undefined": undefined[name]}
            continue
        start = time.perf_counter()
        if name == "infinite":
            if isinstance(twin, str):
                out[name] = {"undefined": twin}
                continue
            kernels, gram = twin_kernels(twin)
            identity = f"twin|{twin!r}"
            m = cap
        else:
            if name == "init":
                if initial is None:
                    out[name] = {"undefined": "no initial weights"}
                    continue
                kernels, gram = empirical_kernels(initial, dtype, chunk_size)
                identity = f"empirical|{chunk_size}|{network_identity(initial, dtype)}"
            elif name == "trained":
                kernels, gram = empirical_kernels(network, dtype, chunk_size)
                identity = f"empirical|{chunk_size}|{network_identity(network, dtype)}"
            else:
                identity = None  # a registered Gram function: nothing names it for certain
                spec = predictor(name)
                found = spec.kernel(KernelContext(network, twin)) if spec.kernel is not None else "no Gram function"
                if isinstance(found, str):
                    out[name] = {"undefined": found}
                    continue
                kernels, gram = registered_kernels(found)
            pinned = options.pinned_points(name)
            if pinned is None and options.time_budget_s == 0:
                skipped.append(name)  # no budget: not measured at scale
                continue
            m = min(pinned, sample.n_train) if pinned else affordable_points(kernels, sample, options, cap)
        with torch.no_grad():
            out[name] = _one(name, kernels, gram, sample, m, options, exact_allowed=name == "infinite", identity=identity)
        out[name]["scale_seconds"] = time.perf_counter() - start
    described = {**sample.describe(), **({"not_measured": skipped} if skipped else {})}
    return {"sample": described, "network": network_scores(sample), "predictors": out}


def initial_network(network: nn.Module, state: Mapping[str, Tensor] | None) -> nn.Module | None:
    """A copy of `network` at the saved initial weights (None without them)."""
    if state is None:
        return None
    initial = copy.deepcopy(network)
    initial.load_state_dict(dict(state))
    return initial


def merge_at_scale(network: dict[str, Any], predictors: dict[str, dict[str, Any]], found: dict[str, Any] | str,
                   seconds: float) -> None:
    """Put `measure_at_scale`'s result (or why it failed: a string) into one measurement's `network` and
    `predictors` dicts, in place; a predictor undefined in the measurement stays undefined."""
    if isinstance(found, str):
        network["scale"] = {"undefined": found}
        return
    network["scale"] = {**found["network"], **found["sample"], "seconds": seconds}
    for name, entry in found["predictors"].items():
        if "undefined" not in entry and "undefined" not in predictors.get(name, {}):
            predictors.setdefault(name, {}).update(entry)
