"""The probe set on which kernel predictors and the network are compared, and its kernels.

Drawn once per run from a set-up orbit DataModule (seeded), it has two parts:

- *orbits* for the paper's spectral rule (docs/THEORY.md §3, §5): `n_seeds` digits of the
  leave-out class and `probe_digits_per_class` digits of every other class, each in all N poses;
- the *network's own task* for kernel regression: a class-balanced draw of (image, pose) pairs
  of the training split, plus up to `OWN_POSES` training pairs of each leave-out seed (its
  observed poses), as regression data; test points are the leave-out seeds' held-out poses (out-test)
  and a class-balanced draw of the in-test split.

`probe_kernels` computes what a predictor needs from one kernel function: the interleaved
two-orbit kernels of every (leave-out seed, other seed) pair, with the scalar output
`logit(leave-out) - logit(other)`, and the kernel between all regression points and the training
ones over the centred logits (summed over classes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from orbitbench.theory import spectral
from orbitbench.errors import OrbitbenchError
from orbitbench.theory.ntk import empirical_ntk, evaluating
from orbitbench.theory.scale_kernels import kernel_view
from orbitbench.data import pick, sample_per_class
from orbitbench.splits import PartialOrbits

# Observed poses per leave-out seed in the regression data: all of them at n_angles 8, a sample
# of them for finer groups (the kernel's cost grows with the square of the point count).
OWN_POSES = 6

__all__ = ["ProbeOptions", "ProbeSet", "ProbeKernels", "draw_probe", "probe_kernels", "network_outputs"]


@dataclass(frozen=True)
class ProbeOptions:
    """How big the probe is (see `draw_probe`).

    Args:
        n_seeds: probe digits of the leave-out class.
        probe_digits_per_class: probe digits of each other class (spectral rule).
        train_per_class: training-split pairs per class for kernel regression.
        in_test_per_class: in-test pairs per class.
        seed: seed of the probe draw.
    """

    n_seeds: int = 32
    probe_digits_per_class: int = 4
    train_per_class: int = 30
    in_test_per_class: int = 10
    seed: int = 124

    def __post_init__(self) -> None:
        # An empty probe set has no kernel to measure (zero-length FFTs, empty regressions).
        for name in ("n_seeds", "probe_digits_per_class", "train_per_class", "in_test_per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OrbitbenchError(f"probe {name}={value!r}: expected an integer >= 1")


@dataclass(frozen=True)
class ProbeSet:
    """Orbits (orbit o, pose k at row o*N + k; leave-out seeds first, then `probe_digits_per_class` per
    other class in `other_classes` order) and the regression points (train, then test)."""

    images: Tensor  # float32 [M*N, 1, H, W], posed and normalised by the DataModule
    image_index: Tensor  # int64 [M], indices into dm.digits
    leave_out_class: int
    other_classes: tuple[int, ...]
    n_seeds: int
    probe_digits_per_class: int
    n_poses: int
    held_out_poses: tuple[int, ...]
    train_images: Tensor  # float32 [R, 1, H, W]: regression data, pairs of the training split
    train_labels: Tensor  # int64 [R]
    in_test_images: Tensor  # float32 [Q, 1, H, W]
    in_test_labels: Tensor  # int64 [Q]
    num_classes: int = 10
    seed: int = 0

    def class_orbits(self, other: int) -> Tensor:
        """Orbit indices [S + T]: the leave-out seeds, then class `other`'s seeds."""
        start = self.n_seeds + self.other_classes.index(other) * self.probe_digits_per_class
        return torch.cat([torch.arange(self.n_seeds), torch.arange(start, start + self.probe_digits_per_class)])

    def rows(self, orbits: Tensor) -> Tensor:
        """Image rows [len(orbits) * N] of these orbits, orbit-major."""
        return (orbits[:, None] * self.n_poses + torch.arange(self.n_poses)).reshape(-1)

    def pair_orbits(self) -> tuple[Tensor, Tensor]:
        """Within one class block: pair p = (seed s, other seed t) as orbit indices [S*T], s-major."""
        s, t = self.n_seeds, self.probe_digits_per_class
        return torch.arange(s).repeat_interleave(t), s + torch.arange(t).repeat(s)

    @property
    def out_test_images(self) -> Tensor:
        """The leave-out seeds at their held-out poses: [S*H, 1, H, W], seed-major."""
        held = torch.tensor(self.held_out_poses)
        return self.images[(torch.arange(self.n_seeds)[:, None] * self.n_poses + held).reshape(-1)]

    @property
    def regression_images(self) -> Tensor:
        """All regression points: train [R], out-test [S*H], in-test [Q]."""
        return torch.cat([self.train_images, self.out_test_images, self.in_test_images])

    def describe(self) -> dict[str, Any]:
        return {"n_seeds": self.n_seeds, "probe_digits_per_class": self.probe_digits_per_class, "seed": self.seed,
                "n_poses": self.n_poses, "held_out_poses": list(self.held_out_poses),
                "leave_out_class": self.leave_out_class, "n_train_points": len(self.train_labels),
                "n_out_test_points": self.n_seeds * len(self.held_out_poses),
                "n_in_test_points": len(self.in_test_labels)}  # fmt: skip


def draw_probe(dm: PartialOrbits, options: ProbeOptions = ProbeOptions()) -> ProbeSet:
    """The probe set of a set-up orbit DataModule (RotatedMNIST, TranslatedMNIST).

    `n_seeds` digits of the leave-out class and `probe_digits_per_class` of every other class (full
    orbits); up to `train_per_class` training-split pairs per class plus up to `OWN_POSES` training
    pairs of each leave-out seed (regression data); up to `in_test_per_class` in-test pairs per class
    (`describe()` records how many were drawn).
    """
    n_seeds, probe_digits_per_class, seed = options.n_seeds, options.probe_digits_per_class, options.seed
    train_per_class, in_test_per_class = options.train_per_class, options.in_test_per_class
    if not isinstance(dm, PartialOrbits):
        raise OrbitbenchError("probe: needs a set-up orbitbench OrbitDataModule (RotatedMNIST, TranslatedMNIST)")
    leave_out = dm.leave_out_class
    held = tuple(int(p) for p in dm.held_out_poses)
    labels = dm.digits.labels
    generator = torch.Generator().manual_seed(seed)
    classes = int(dm.num_classes)
    others = tuple(c for c in range(classes) if c != leave_out)
    # One generator draws, in this order: the digits (leave-out class first), the regression points,
    # the leave-out digits' own training poses, the in-test points.
    counts = {leave_out: n_seeds, **{c: probe_digits_per_class for c in others}}
    chosen = list(sample_per_class(labels, counts, generator, "probe digits").values())
    index = torch.cat(chosen)  # [M]
    n = int(dm.n_poses)

    train, in_test = dm.splits["train"], dm.splits["in_test"]  # int64 [*, 2]: (image, pose)
    # Regression points: up to the counts asked (a small protocol, e.g. 20 digits x 2 poses, has fewer).
    rows = sample_per_class(labels[train[:, 0]], {c: train_per_class for c in range(classes)}, generator,
                            "training split", at_most=True).values()  # fmt: skip
    own = [pick(rows_of, min(OWN_POSES, rows_of.numel()), generator)  # the leave-out seeds' observed poses
           for rows_of in (torch.nonzero(train[:, 0] == i).squeeze(1) for i in chosen[0].tolist())]  # fmt: skip
    train_pairs = train[torch.unique(torch.cat([*rows, *own]))]
    test_rows = list(sample_per_class(labels[in_test[:, 0]], {c: in_test_per_class for c in range(classes)}, generator,
                                      "in-test split", at_most=True).values())  # fmt: skip
    in_test_pairs = in_test[torch.cat(test_rows)]
    with torch.no_grad():
        posed = lambda pairs: dm.materialize(pairs[:, 0], pairs[:, 1]).detach().cpu()  # noqa: E731
        images = dm.materialize(index.repeat_interleave(n), torch.arange(n).repeat(index.numel())).detach().cpu()
        return ProbeSet(
            images=images, image_index=index, leave_out_class=leave_out, other_classes=others, n_seeds=n_seeds,
            probe_digits_per_class=probe_digits_per_class, n_poses=n, held_out_poses=held, train_images=posed(train_pairs),
            train_labels=labels[train_pairs[:, 0]].clone(), in_test_images=posed(in_test_pairs),
            in_test_labels=labels[in_test_pairs[:, 0]].clone(), num_classes=classes, seed=seed,
        )  # fmt: skip


@dataclass
class ProbeKernels:
    """One kernel on the probe: pair kernels [P, 2N, 2N] (class-major, P = (C-1) S T) and the
    kernel [R+U, R] between the regression points (train, out-test, in-test) and the train ones, float64 CPU."""

    pairs: Tensor
    regression: Tensor | None  # None: not computed


def probe_kernels(probe: ProbeSet, gram: Callable[..., Tensor], regression: bool = True) -> ProbeKernels:
    """`gram(images, output, images2=None)` -> [B, B2]: output is (leave-out, other) for a logit
    difference or "centred" for the centred logits summed over classes. `regression=False` skips
    the regression kernel (its per-sample factors hold every parameter once per class)."""
    a_idx, b_idx = probe.pair_orbits()
    pairs = []
    for other in probe.other_classes:
        block = gram(probe.images[probe.rows(probe.class_orbits(other))], (probe.leave_out_class, other))
        pairs.append(spectral.orbit_pair_kernels(block.double().cpu(), probe.n_poses, a_idx, b_idx))  # [S*T, 2N, 2N]
    if not regression:
        return ProbeKernels(pairs=torch.cat(pairs), regression=None)
    kernel = gram(probe.regression_images, "centred", probe.train_images).double().cpu()
    return ProbeKernels(pairs=torch.cat(pairs), regression=kernel)


def empirical_gram(network: nn.Module, dtype: torch.dtype = torch.float64, chunk_size: int = 256):
    """`gram` for `probe_kernels` from the network's empirical NTK (on the network's device).

    A `C4Pooled` network `mean_k f(rot90^k x)` has the kernel `mean_{k,l} K_f(rot90^k x, rot90^l x')`
    of its backbone: computed that way, the backbone's layers keep their fast per-sample path (the
    pooled forward pass mixes four poses in one batch, which would send them to the generic one).
    A `Linearized` network's kernel is its backbone's at the initial weights, at any trained weights.
    """
    inner, turns = kernel_view(network)
    device = next(inner.parameters()).device
    pooled = turns == 4

    def gram(images: Tensor, output: Any, images2: Tensor | None = None) -> Tensor:
        pair = [images] if images2 is None else [images, images2]
        if pooled:  # [4B, ...], pose-major
            pair = [torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]) for x in pair]
        kernel = empirical_ntk(inner, *[x.to(device) for x in pair], output=output, chunk_size=chunk_size, dtype=dtype)
        if pooled:
            b1, b2 = len(images), len(images if images2 is None else images2)
            kernel = kernel.reshape(4, b1, 4, b2).mean(dim=(0, 2))  # [B, B2]
        return kernel

    return gram


def network_outputs(network: nn.Module, probe: ProbeSet) -> Tensor:
    """Centred logits [R+U, C] of the network at every regression point (eval mode), float64 CPU."""
    first = next(network.parameters())  # its device and dtype (float64 under `64-true`)
    with torch.no_grad(), evaluating(network):
        out = torch.cat([network(x.to(first.device, first.dtype)) for x in probe.regression_images.split(1024)]).double().cpu()
    return out - out.mean(1, keepdim=True)
