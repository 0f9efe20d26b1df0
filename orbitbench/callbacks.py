"""`EmpiricalNTKCallback`: does the trained network's own kernel predict its out-test behaviour?

While a network trains on partially observed orbits, this Lightning callback takes a fixed probe
set from the DataModule (seeds of the leave-out class against seeds of every other class, full
orbits under the DataModule's own group action and normalisation) and, at fit start, every
`every_n_epochs` epochs and at the end of training, computes for each (leave-out seed, other seed)
orbit pair:

- the empirical NTK of the network (`orbitbench.ntk`) on the interleaved pair, with the scalar
  output `logit(leave-out class) - logit(other class)` (label +1 / -1 as in THEORY.md §2);
- the spectral error of its circularized kernel (Eq. 7 / App. A.1 at the held-out poses) and the
  symmetrized exact kernel-regression error (THEORY.md §2-3);
- the network's own prediction at the held-out poses of the leave-out seeds.

Logged (every logger gets the scalars; TensorBoard also the figures), step = global step:

    ntk/spectral_error_mean, ntk/exact_error_mean, ntk/spectral_exact_correlation
    ntk/spectral_accuracy        one-vs-many spectral prediction over the probe seeds (THEORY.md §5)
    ntk/network_accuracy         the network's out-test accuracy on the same seeds and poses
    ntk/agreement                fraction of (seed, held-out pose) where the two agree
    ntk/pair_spectral_accuracy, ntk/pair_network_accuracy, ntk/pair_agreement   the same per pair
    ntk/circulant_defect         mean |K - circ(K)| / |K|: how far the kernel is from circulant
    ntk/kernel_alignment_init    <K0, K> / (|K0| |K|) against the kernel at fit start
    ntk/kernel_drift             |K - K0| / |K0|
    ntk/seconds                  wall time of this measurement
    ntk/infinite_*               the analytic infinite-width NTK's numbers on the same probes
                                 (ReLU MLPs such as paper_mlp only; computed once)
figures: ntk/kernel (heatmap of one pair), ntk/inverse_spectrum (1/lambda_k, lambda_N marked, the
paper's Fig. 2C picture), ntk/spectral_vs_exact (scatter over pairs).

Between measurements it does nothing, so training speed is untouched; `history` keeps every
measurement for a final summary (`summary()`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from orbitbench import spectral
from orbitbench.errors import OrbitbenchError
from orbitbench.ntk import empirical_ntk, evaluating

__all__ = ["EmpiricalNTKCallback", "NTKProbe", "mlp_depth"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MLP_PARTS = (nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Identity, nn.LogSoftmax, nn.Sequential)


@dataclass(frozen=True)
class NTKProbe:
    """The fixed probe set: M seed orbits of N poses, orbit-major (orbit o, pose k at row o*N + k).

    The first `n_seeds` orbits are seeds of the leave-out class, then `seeds_per_class` seeds of
    each class in `other_classes`, in that order.
    """

    images: Tensor  # float32 [M*N, 1, H, W], posed and normalised by the DataModule
    image_index: Tensor  # int64 [M], indices into dm.digits
    classes: Tensor  # int64 [M]
    leave_out_class: int
    other_classes: tuple[int, ...]
    n_seeds: int
    seeds_per_class: int
    n_poses: int
    held_out_poses: tuple[int, ...]

    def class_orbits(self, other: int) -> Tensor:
        """Orbit indices [n_seeds + seeds_per_class]: the leave-out seeds, then class `other`'s seeds."""
        rank = self.other_classes.index(other)
        start = self.n_seeds + rank * self.seeds_per_class
        return torch.cat([torch.arange(self.n_seeds), torch.arange(start, start + self.seeds_per_class)])

    def rows(self, orbits: Tensor) -> Tensor:
        """Image rows [len(orbits) * N] of these orbits, orbit-major."""
        return (orbits[:, None] * self.n_poses + torch.arange(self.n_poses)).reshape(-1)

    def pair_orbits(self) -> tuple[Tensor, Tensor]:
        """Within one class block (`class_orbits`): pair p = (seed s, other seed t) as orbit indices [S*T]."""
        s, t = self.n_seeds, self.seeds_per_class
        return torch.arange(s).repeat_interleave(t), s + torch.arange(t).repeat(s)


def mlp_depth(network: nn.Module) -> int | None:
    """Hidden-layer count if `network` is a plain ReLU MLP (paper_mlp, mlp), else None.

    Those have an analytic infinite-width NTK (stax Dense/Relu); anything else does not here.
    """
    modules = list(network.modules())
    if not all(type(m) in _MLP_PARTS for m in modules) or not any(isinstance(m, nn.ReLU) for m in modules):
        return None
    linears = sum(isinstance(m, nn.Linear) for m in modules)
    return linears - 1 if linears >= 2 else None


def network_of(pl_module: nn.Module) -> nn.Module:
    """The zoo network inside a LightningModule (`net` or `backbone`), or the module itself."""
    for name in ("net", "backbone"):
        candidate = getattr(pl_module, name, None)
        if isinstance(candidate, nn.Module):
            return candidate
    return pl_module


class EmpiricalNTKCallback(L.Callback):
    """Empirical NTK spectral predictions vs the network's out-test behaviour, live in TensorBoard.

    Args:
        every_n_epochs: measure after every this many training epochs (plus fit start and end).
        n_seeds: seed digits of the leave-out class in the probe set.
        seeds_per_class: seed digits of each other class; pairs = n_seeds * 9 * seeds_per_class.
        reg: ridge of both the spectral (`spectral.spectrum`) and the exact regression.
        dtype: "float64" (THEORY.md: precision matters) or "float32" for the kernels.
        chunk_size: inputs per forward/backward pass inside `empirical_ntk`.
        infinite_width: log the analytic NTK's numbers too: None = when the network is a ReLU MLP.
        figures: add the three figures to TensorBoard at each measurement.
        seed: the probe draw.
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        n_seeds: int = 4,
        seeds_per_class: int = 1,
        reg: float = 1e-10,
        dtype: str = "float64",
        chunk_size: int = 256,
        infinite_width: bool | None = None,
        figures: bool = True,
        seed: int = 124,
    ) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("n_seeds", n_seeds),
                            ("seeds_per_class", seeds_per_class), ("chunk_size", chunk_size)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OrbitbenchError(f"EmpiricalNTKCallback: {name}={value!r}; accepted: a positive integer")
        if dtype not in _DTYPES:
            raise OrbitbenchError(f"EmpiricalNTKCallback: dtype={dtype!r}; accepted: {', '.join(_DTYPES)}")
        if not reg >= 0:
            raise OrbitbenchError(f"EmpiricalNTKCallback: reg={reg!r}; accepted: a number >= 0")
        self.every_n_epochs = every_n_epochs
        self.n_seeds = n_seeds
        self.seeds_per_class = seeds_per_class
        self.reg = float(reg)
        self.dtype = _DTYPES[dtype]
        self.chunk_size = chunk_size
        self.infinite_width = infinite_width
        self.figures = figures
        self.seed = seed
        self.probe: NTKProbe | None = None
        self.history: list[dict[str, float]] = []
        self.pair_kernels: Tensor | None = None  # [P, 2N, 2N] of the last measurement, CPU
        self._initial: list[Tensor] | None = None  # class-block kernels at fit start
        self._infinite: dict[str, Any] | None = None
        self._last_step: int | None = None

    # ---- probe set -------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._initial, self._last_step, self.history = None, None, []  # a checkpoint may restore them next
        if self.probe is not None:
            return
        dm = trainer.datamodule
        if dm is None or not all(hasattr(dm, a) for a in ("materialize", "digits", "group", "hparams")):
            raise OrbitbenchError(
                "EmpiricalNTKCallback needs an orbitbench OrbitDataModule (RotatedMNIST, TranslatedMNIST)"
            )
        self.probe = self.draw_probe(dm)

    def draw_probe(self, dm: Any) -> NTKProbe:
        """The probe set from a set-up DataModule (also usable without a Trainer, as in benchmarks)."""
        leave_out = int(dm.hparams.leave_out_class)
        held = tuple(int(p) for p in getattr(dm, "held_out_poses", dm.hparams.held_out_poses))
        labels = dm.digits.labels
        generator = torch.Generator().manual_seed(self.seed)
        others = tuple(c for c in range(int(dm.num_classes)) if c != leave_out)
        chosen = []
        for label in (leave_out, *others):
            members = torch.nonzero(labels == label).squeeze(1)
            count = self.n_seeds if label == leave_out else self.seeds_per_class
            if members.numel() < count:
                raise OrbitbenchError(
                    f"EmpiricalNTKCallback: class {label} has {members.numel()} digits, fewer than the "
                    f"{count} probe seeds asked for; lower n_seeds / seeds_per_class"
                )
            chosen.append(members[torch.randperm(members.numel(), generator=generator)[:count]])
        index = torch.cat(chosen)  # [M]
        n = int(dm.n_poses)
        with torch.no_grad():
            images = dm.materialize(index.repeat_interleave(n), torch.arange(n).repeat(index.numel()))
        return NTKProbe(
            images=images.detach().cpu(), image_index=index, classes=labels[index].clone(),
            leave_out_class=leave_out, other_classes=others, n_seeds=self.n_seeds,
            seeds_per_class=self.seeds_per_class, n_poses=n, held_out_poses=held,
        )  # fmt: skip

    # ---- when to measure --------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._initial is not None:
            return  # resumed: the kernel at initialisation came with the checkpoint (global step not yet restored)
        self._measure(trainer, pl_module, "fit_start")  # the kernel at initialisation

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._measure(trainer, pl_module, "epoch")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_train_end, not on_fit_end: the model is still on its training device here.
        if self._last_step != trainer.global_step:
            self._measure(trainer, pl_module, "fit_end")
        elif self.history:
            self.history[-1]["final"] = 1.0

    # ---- the measurement --------------------------------------------------------------------

    def compute(self, network: nn.Module) -> tuple[dict[str, float], dict[str, Tensor]]:
        """All numbers for `network` on the probe set: (scalars, tensors for figures and tests)."""
        probe = self.probe
        if probe is None:
            raise OrbitbenchError("EmpiricalNTKCallback: no probe set yet (setup() was not called for fit)")
        device = next(network.parameters()).device
        images = probe.images.to(device)
        a_idx, b_idx = probe.pair_orbits()
        blocks, pairs = [], []
        for other in probe.other_classes:
            x = images[probe.rows(probe.class_orbits(other))]  # [(S+T)*N, 1, H, W]
            block = empirical_ntk(network, x, output=(probe.leave_out_class, other), chunk_size=self.chunk_size,
                                  dtype=self.dtype).double().cpu()  # fmt: skip
            blocks.append(block)
            pairs.append(spectral.orbit_pair_kernels(block, probe.n_poses, a_idx, b_idx))  # [S*T, 2N, 2N]
        kernels = torch.cat(pairs)  # [P, 2N, 2N], P = (classes-1) * S * T, class-major
        numbers = self._spectral_numbers(kernels)

        held = torch.tensor(probe.held_out_poses)
        with torch.no_grad(), evaluating(network):
            x = images[(torch.arange(probe.n_seeds)[:, None] * probe.n_poses + held).reshape(-1)]
            logits = network(x).double().cpu().reshape(probe.n_seeds, len(held), -1)  # [S, H, classes]
        network_correct = logits.argmax(-1) == probe.leave_out_class  # [S, H]
        others = torch.tensor(probe.other_classes)
        margin = logits[..., probe.leave_out_class, None] - logits[..., others]  # [S, H, C-1]
        pair_network = (margin > 0).permute(2, 0, 1)[:, :, None]  # [C-1, S, 1, H] (same for every t)

        scalars = {
            "spectral_error_mean": numbers["spectral_error"].mean(),
            "exact_error_mean": numbers["exact_error"].mean(),
            "spectral_exact_correlation": _correlation(numbers["spectral_error"].mean(-1), numbers["exact_error"]),
            "circulant_defect": ((kernels - numbers["circular"]).flatten(1).norm(dim=1)
                                 / kernels.flatten(1).norm(dim=1)).mean(),  # fmt: skip
            "network_accuracy": network_correct.double().mean(),
            **_agreement(numbers["pair_prediction"], network_correct, pair_network, probe, ""),
        }
        if self._initial is None:
            self._initial = blocks
        alignment = [(b0 * b).sum() / (b0.norm() * b.norm()) for b0, b in zip(self._initial, blocks)]
        drift = [(b - b0).norm() / b0.norm() for b0, b in zip(self._initial, blocks)]
        scalars["kernel_alignment_init"] = torch.stack(alignment).mean()
        scalars["kernel_drift"] = torch.stack(drift).mean()

        infinite = self._infinite_numbers(network, probe)
        if infinite is not None:
            scalars["infinite_spectral_error_mean"] = infinite["spectral_error"].mean()
            scalars["infinite_exact_error_mean"] = infinite["exact_error"].mean()
            scalars.update(_agreement(infinite["pair_prediction"], network_correct, pair_network, probe, "infinite_"))
        tensors = {"kernels": kernels, "logits": logits, **numbers}
        if infinite is not None:
            tensors["infinite_kernels"] = infinite["kernels"]
        return {k: float(v) for k, v in scalars.items()}, tensors

    def _spectral_numbers(self, kernels: Tensor) -> dict[str, Tensor]:
        """Spectral error at the held-out poses [P, H], exact symmetrized error [P], pair predictions."""
        probe = self.probe
        circular = spectral.circularize(kernels)
        if len(probe.held_out_poses) == 1:  # a circulant kernel is pose-invariant: Eq. 7 itself
            spectral_err = spectral.spectral_error(circular, self.reg)[:, None]
        else:  # several missing points of orbit a (App. A.1)
            missing = [2 * p for p in probe.held_out_poses]
            spectral_err = spectral.missing_errors(circular, missing, self.reg)
        exact = spectral.symmetrized_error(kernels, self.reg)
        n_other, s, t = len(probe.other_classes), probe.n_seeds, probe.seeds_per_class
        prediction = (1.0 - spectral_err).reshape(n_other, s, t, -1)  # [C-1, S, T, H]
        return {"circular": circular, "spectral_error": spectral_err, "exact_error": exact,
                "pair_prediction": prediction}  # fmt: skip

    def _infinite_numbers(self, network: nn.Module, probe: NTKProbe) -> dict[str, Tensor] | None:
        """The analytic NTK of the matching infinite-width MLP on the same probes (cached: it never changes)."""
        if self._infinite is not None:
            return self._infinite or None
        depth = mlp_depth(network) if self.infinite_width is not False else None
        if depth is None:
            if self.infinite_width:
                raise OrbitbenchError("EmpiricalNTKCallback: infinite_width=True needs a ReLU MLP (paper_mlp, mlp)")
            self._infinite = {}
            return None
        from orbitbench.kernels import infinite_kernel

        gram = infinite_kernel(probe.images, arch="mlp", kind="ntk", depth=depth)  # [M*N, M*N] float64
        a_idx, b_idx = probe.pair_orbits()
        kernels = torch.cat([
            spectral.orbit_pair_kernels(gram, probe.n_poses, probe.class_orbits(c)[a_idx], probe.class_orbits(c)[b_idx])
            for c in probe.other_classes
        ])  # fmt: skip
        self._infinite = {"kernels": kernels, **self._spectral_numbers(kernels)}
        return self._infinite

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        if not trainer.is_global_zero:  # no collectives inside: other ranks simply skip it
            return
        if self.probe is None:
            self.setup(trainer, pl_module, "fit")
        start = time.perf_counter()
        scalars, tensors = self.compute(network_of(pl_module))
        scalars["seconds"] = time.perf_counter() - start
        step = trainer.global_step
        self._last_step = step
        self.pair_kernels = tensors["kernels"]
        metrics = {f"ntk/{k}": v for k, v in scalars.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            add_figure = getattr(getattr(logger, "experiment", None), "add_figure", None)
            if self.figures and add_figure is not None:
                for name, figure in self._figures(tensors).items():
                    add_figure(f"ntk/{name}", figure, step)
        self.history.append({"step": float(step), "epoch": float(trainer.current_epoch),
                             "final": float(when == "fit_end"), **scalars})  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """Kernels at initialisation and the history travel with checkpoints: drift survives a resume."""
        return {"initial": self._initial, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._initial = state_dict.get("initial")
        self.history = list(state_dict.get("history", []))

    def summary(self) -> dict[str, float]:
        """The last measurement's scalars (spectral-predicted vs actual out-test accuracy, ...)."""
        return dict(self.history[-1]) if self.history else {}

    def summary_line(self) -> str:
        """One line for a run's printed summary: spectral-predicted vs actual out-test accuracy."""
        if not self.history or self.probe is None:
            return "  empirical NTK  no measurement"
        first, last = self.history[0], self.history[-1]
        infinite = last.get("infinite_spectral_accuracy")
        # The kernel at initialisation is the reference the trained kernel moved away from.
        at_init = f" (kernel at init: {first['spectral_accuracy']:.3f})" if first["step"] == 0 and first is not last else ""
        return (
            f"  empirical NTK  out-test on {self.probe.n_seeds} probe seeds: spectral-predicted "
            f"{last['spectral_accuracy']:.3f} | network {last['network_accuracy']:.3f} | agreement "
            f"{last['agreement']:.3f}"
            + ("" if infinite is None else f" | infinite-width predicted {infinite:.3f}")
            + at_init
            + f" ({last['seconds']:.2f} s per measurement)"
        )

    # ---- figures ----------------------------------------------------------------------------

    def _figures(self, tensors: dict[str, Tensor]) -> dict[str, Any]:
        from matplotlib.figure import Figure

        probe = self.probe
        kernel, circular = tensors["kernels"][0], tensors["circular"][0]
        other = probe.other_classes[0]
        title = f"seed {int(probe.image_index[0])} (class {probe.leave_out_class}) vs class {other}"

        heatmap = Figure(figsize=(4.2, 3.6), layout="constrained")
        axes = heatmap.add_subplot()
        image = axes.imshow(kernel.numpy(), cmap="viridis")
        heatmap.colorbar(image, ax=axes)
        axes.set(title=f"empirical NTK, {title}", xlabel="j (even: leave-out orbit)", ylabel="i")
        axes.title.set_fontsize(8)

        n = kernel.shape[-1]
        spectrum = spectral.spectrum(circular, self.reg)
        inverse = (1.0 / spectrum).numpy()
        spectrum_figure = Figure(figsize=(4.5, 3.2), layout="constrained")
        axes = spectrum_figure.add_subplot()
        axes.semilogy(range(n), inverse, "o-", ms=3, label="empirical NTK (circularized)")
        if "infinite_kernels" in tensors:
            infinite = spectral.spectrum(spectral.circularize(tensors["infinite_kernels"][0]), self.reg)
            axes.semilogy(range(n), (1.0 / infinite).numpy(), "s--", ms=3, alpha=0.7, label="infinite-width NTK")
        axes.axvline(n // 2, color="tab:red", lw=1)
        axes.annotate(r"$1/\lambda_N$", (n // 2, inverse[n // 2]), color="tab:red", xytext=(4, 4),
                      textcoords="offset points")  # fmt: skip
        axes.set(xlabel="frequency k", ylabel=r"$1/\lambda_k$", title=f"inverse spectrum, {title}")
        axes.title.set_fontsize(8)
        axes.legend(fontsize=7)

        scatter = Figure(figsize=(3.8, 3.6), layout="constrained")
        axes = scatter.add_subplot()
        spectral_err = tensors["spectral_error"].mean(-1).numpy()
        exact = tensors["exact_error"].numpy()
        axes.scatter(exact, spectral_err, s=10, alpha=0.7)
        top = max(1.0, float(max(spectral_err.max(), exact.max())) * 1.05)
        axes.plot([0, top], [0, top], color="gray", lw=1)
        axes.axhline(1.0, color="tab:red", lw=0.8, ls=":")
        axes.set(xlabel="symmetrized exact error", ylabel="spectral error (Eq. 7)", xlim=(0, top), ylim=(0, top),
                 title=f"{len(exact)} probe pairs")  # fmt: skip
        return {"kernel": heatmap, "inverse_spectrum": spectrum_figure, "spectral_vs_exact": scatter}


def _agreement(prediction: Tensor, network_correct: Tensor, pair_network: Tensor, probe: NTKProbe, prefix: str) -> dict:
    """Spectral vs network accuracy and agreement, per seed (one-vs-many) and per pair.

    prediction [C-1, S, T, H] = 1 - spectral error; network_correct [S, H]; pair_network [C-1, S, 1, H].
    """
    seed_spectral = (prediction.mean(2) > 0).all(0)  # [S, H]: > 0 against every other class (THEORY.md §5)
    pair_spectral = prediction > 0  # [C-1, S, T, H]
    return {
        f"{prefix}spectral_accuracy": seed_spectral.double().mean(),
        f"{prefix}agreement": (seed_spectral == network_correct).double().mean(),
        f"{prefix}pair_spectral_accuracy": pair_spectral.double().mean(),
        f"{prefix}pair_network_accuracy": pair_network.expand_as(pair_spectral).double().mean(),
        f"{prefix}pair_agreement": (pair_spectral == pair_network).double().mean(),
    }


def _correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of two [P] vectors; NaN when either is constant (or P < 2)."""
    if a.numel() < 2 or a.std() == 0 or b.std() == 0:
        return torch.tensor(math.nan)
    return torch.corrcoef(torch.stack([a, b]))[0, 1]
