"""The kernel predictors of a network's out-test accuracy, registered in one place.

A predictor is a kernel whose regression predicts what the network does on the held-out poses
(docs/THEORY.md §4). What each one is, how it is measured and how it is shown lives here; the
callback (`orbitbench.theory.predictions.KernelPredictors` computes them), the run record, the sweep's
results, the leaderboard's schema, tables and figures and the methods' `MethodInfo` read the names
from this registry, so a new predictor is one `register_predictor(...)` call plus its kernel:

    register_predictor(Predictor("my_kernel", measured="...", label="my kernel", color="tab:red",
                                 kernel=lambda context: my_gram_function))

`kernel(context)` gets a `KernelContext` (the network at its current weights, the model's kernel
twin) and returns a Gram function `(images, outputs, images2=None) -> [B, B2] float64` or one line
saying why the predictor is undefined. The three built-in ones are measured by `KernelPredictors`
itself (`kernel=None`): `init` keeps its linearised network, `trained` its drift from `init`.

Nothing here imports torch: the leaderboard reads names and labels without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

__all__ = ["KernelContext", "Predictor", "predictor", "predictor_names", "recorded_predictions", "register_predictor"]



@dataclass(frozen=True)
class KernelContext:
    """What a registered predictor's kernel may use: the network at its current weights (`nn.Module`,
    images -> logits) and the model's kernel twin (`KernelTwin`, or why there is none)."""

    network: Any
    twin: Any


@dataclass(frozen=True)
class Predictor:
    """One kernel predictor.

    name: the key in records, results (`pred_<name>_out_test`), entries and metric names.
    measured: one line, what kernel and when (docs, legends).
    label: how tables and figure legends name it.
    color: its colour in figures (matplotlib).
    when: `once` (a fixed kernel, computed at fit start) or `every` (at every measurement).
    shown: a column of the leaderboard table and figure.
    kernel: None for the built-in ones; else `kernel(KernelContext) -> gram function | reason`.
    """

    name: str
    measured: str
    label: str
    color: str
    when: Literal["once", "every"] = "every"
    shown: bool = True
    kernel: Callable[[KernelContext], Any] | None = None


_REGISTRY: dict[str, Predictor] = {}


def register_predictor(spec: Predictor) -> Predictor:
    """Add `spec` (a name registered twice by different specs is refused)."""
    if not spec.name.isidentifier():
        raise ValueError(f"predictor name {spec.name!r}: expected an identifier")
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"kernel predictor {spec.name!r} is already registered")
    if spec.when not in ("once", "every"):
        raise ValueError(f"predictor {spec.name!r}: when={spec.when!r}; accepted: once, every")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_predictor(name: str) -> None:
    """Remove a registered predictor (tests, notebooks that try one)."""
    _REGISTRY.pop(name, None)


def predictor_names() -> tuple[str, ...]:
    """Every registered predictor, in display order (registration order)."""
    return tuple(_REGISTRY)


def predictor(name: str) -> Predictor:
    return _REGISTRY[name]


def recorded_predictions(record: Any) -> dict[str, dict[str, float | None]]:
    """predictor -> {"out_test": spectral-rule prediction, "kappa": its agreement with the network}
    from a run record (`RunRecord.predictions`, typed); predictors without a number (undefined, not
    measured) -> None."""
    measured = record.predictions.predictors if record.predictions is not None else {}
    out = {}
    for name in predictor_names():
        entry = measured.get(name)
        values = (entry.spectral_out_test_acc, entry.kappa) if entry is not None else (None, None)
        out[name] = {key: None if v is None else float(v) for key, v in zip(("out_test", "kappa"), values)}
    return out


register_predictor(Predictor(
    "infinite", "the analytic NTK of the model's declared kernel twin (infinite width); undefined without a twin",
    "infinite", "tab:blue", when="once"))  # fmt: skip
register_predictor(Predictor(
    "init", "the network's empirical NTK at initialisation, plus its linearised network", "init", "tab:orange",
    when="once"))  # fmt: skip
register_predictor(Predictor(
    "trained", "the empirical NTK at the current weights (the after-kernel)", "trained", "tab:green", shown=False))
