"""A ranked-track training step: `orbitbench fit` (Lightning) against a plain PyTorch loop, side by side.

Track settings by default (`sweeps/mnist_cpu.yaml`): paper_mlp, full MNIST, n_angles 8, bilinear,
batch 512, bf16 autocast, deterministic algorithms, one torch thread. Both sides train the same zoo
model (same init) on the same index batches (the DataModule's sampler), in one process, alternating
block by block (`--block` steps of one loop, then of the other) so that load drift on a shared
machine hits both alike; the first pair of blocks is dropped as warm-up and the ratio is the median
of the paired blocks.

- orbitbench: the CLI's loop (OrbitClassifier, `self.log`, torchmetrics, per-step reseeding,
  `bf16-mixed`, deterministic), posing from the DataModule (`materialize`: posed once per fit when
  it fits the cap); logger, checkpoints and validation off (the plain loop has none).
- plain: a hand-written loop in its best configuration: the group action applied to each batch on
  the fly (no posing ahead), `torch.autocast` bf16, the same Adam (`--plain-fused` for the fused
  one), deterministic algorithms with the NaN fill of fresh memory off.

`--fused` gives orbitbench fused Adam and `--dropout-mask uniform` builds the MLP with the cheaper
dropout mask on both sides (the track's re-seed settings, benchmarks/RESULTS.md): with
`--plain-fused` too, both loops train the same model with the same optimizer; `--plain-track-model`
keeps the plain loop on the track's model (the issue's baseline: the track's settings, posed on the fly).

It also prints the fraction of the measured bf16 matmul peak (one thread, a 2048^3 product) that the
MLP's step reaches: 6 x batch x the Linear layers' weights (forward 2, backward 4) per step.

    OMP_NUM_THREADS=1 python benchmarks/bench_training.py
    OMP_NUM_THREADS=1 python benchmarks/bench_training.py --models paper_convnet --n-angles 4
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from orbitbench.datamodules import RotatedMNIST
from orbitbench.run.callbacks.reseed import ReseedEachStep
from orbitbench.run.module import OrbitClassifier, paper_adam

# Paper Fig. 1 grid (docs/THEORY.md §1): full MNIST, n_angles 2..64, 10 leave-out classes, 22 epochs.
FIG1_IMAGES = 60_000
FIG1_ANGLES = (2, 4, 8, 16, 32, 64)
FIG1_CLASSES = 10
FIG1_EPOCHS = 22
FIG1_TRAIN_FRACTION = 0.9  # in-test takes 10% (out-test, 1/10 of one pose, is negligible here)


class PlainLoop:
    """The baseline: same model init, same index batches, poses made per batch, autocast bf16."""

    def __init__(self, model_name: str, dm: RotatedMNIST, fused: bool, kwargs: dict) -> None:
        L.seed_everything(125, verbose=False)
        self.net = OrbitClassifier(model_name, backbone_kwargs=kwargs).net
        self.optimizer = paper_adam(self.net.parameters(), fused=fused)
        self.dm, self.loader = dm, dm.train_dataloader()
        self.images = dm.base_images

    def block(self, epoch: int, steps: int) -> float:
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        self.loader.sampler.set_epoch(epoch)
        self.net.train()
        start = time.perf_counter()
        for step, batch in enumerate(self.loader):
            if step == steps:
                break
            images = self.dm.group.apply(self.images[batch.image_index], batch.pose).unsqueeze(1)  # on the fly
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(self.net(images), batch.label)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start


class Alternate(L.Callback):
    """After each orbitbench block (a limited epoch), run one plain block of the same length."""

    def __init__(self, plain: PlainLoop, steps: int) -> None:
        self.plain, self.steps, self.orbitbench, self.plain_times = plain, steps, [], []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.orbitbench.append(time.perf_counter() - self._start)
        self.plain_times.append(self.plain.block(trainer.current_epoch, self.steps))


def measure(model_name: str, dm: RotatedMNIST, blocks: int, steps: int, plain_fused: bool, fused: bool,
            kwargs: dict, plain_kwargs: dict) -> tuple[list[float], list[float]]:  # fmt: skip
    """(orbitbench, plain) seconds per block of `steps` steps, first pair dropped."""
    timer = Alternate(PlainLoop(model_name, dm, plain_fused, plain_kwargs), steps)
    L.seed_everything(125, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=blocks, limit_train_batches=steps, precision="bf16-mixed",
        deterministic=True, logger=False, log_every_n_steps=10, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[ReseedEachStep(), timer],
    )
    module = OrbitClassifier(model_name, backbone_kwargs=kwargs, optimizer=functools.partial(paper_adam, fused=fused),
                             channels_last=model_name != "paper_mlp")  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return timer.orbitbench[1:], timer.plain_times[1:]


def matmul_peak(size: int = 2048, rounds: int = 5) -> float:
    """Measured bf16 matmul throughput of this process (FLOP/s), the best of `rounds`."""
    a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def step_flops(net: nn.Module, batch: int) -> float:
    """Matmul FLOPs of one training step of an MLP: 6 x batch x the Linear layers' weights."""
    return 6.0 * batch * sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear))


def fig1_estimate(throughput: dict[str, float]) -> list[str]:
    """Fig. 1 grid time from training throughput (samples/s): train samples of every fit."""
    samples_per_model = sum(
        FIG1_IMAGES * n * FIG1_TRAIN_FRACTION * FIG1_EPOCHS * FIG1_CLASSES for n in FIG1_ANGLES
    )
    lines, total = [], 0.0
    for name, rate in throughput.items():
        seconds = samples_per_model / rate
        total += seconds
        lines.append(f"  {name:>14}: {samples_per_model:.3g} train samples / {rate:,.0f} samples/s = {seconds / 3600:.2f} h")
    lines.append(f"  {'grid total':>14}: {total / 3600:.2f} h for the models above (training only; eval adds ~10% forward passes)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["paper_mlp"])
    parser.add_argument("--n-angles", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--block", type=int, default=60, help="steps per block")
    parser.add_argument("--blocks", type=int, default=7, help="blocks of each loop, alternating; the first is warm-up")
    parser.add_argument("--plain-fused", action="store_true", help="fused Adam in the plain loop")
    parser.add_argument("--fused", action="store_true", help="fused Adam in orbitbench's loop")
    parser.add_argument("--dropout-mask", choices=["bernoulli", "uniform"], default=None,
                        help="paper_mlp's dropout mask, on both sides")
    parser.add_argument("--plain-track-model", action="store_true",
                        help="the plain loop keeps the track's model (nn.Dropout) whatever --dropout-mask says")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dm = RotatedMNIST(n_angles=args.n_angles, batch_size=args.batch_size, source="mnist", seed=125)
    dm.setup("fit")
    print(f"CPU, 1 torch thread, torch {torch.__version__}, lightning {L.__version__}; load average {os.getloadavg()}")
    print(f"data: RotatedMNIST({dm.digits.source}, n_angles={args.n_angles}, bilinear), batch {args.batch_size}, "
          f"bf16; {args.blocks} blocks of {args.block} steps of each loop, alternating (first pair dropped); "
          f"orbitbench fused Adam {args.fused}, plain fused Adam {args.plain_fused}, dropout mask {args.dropout_mask or 'default'}")
    peak = matmul_peak()
    print(f"measured bf16 matmul peak: {peak / 1e9:.0f} GFLOP/s (2048^3, one thread)")
    for name in args.models:
        kwargs = {"dropout_mask": args.dropout_mask} if args.dropout_mask else {}
        plain_kwargs = {} if args.plain_track_model else kwargs
        ours, plain = measure(name, dm, args.blocks, args.block, args.plain_fused, args.fused, kwargs, plain_kwargs)
        o, p = statistics.median(ours) / args.block, statistics.median(plain) / args.block
        paired = statistics.median(x / y for x, y in zip(ours, plain))
        line = (f"{name}: orbitbench {1000 * o:.1f} ms/step, plain {1000 * p:.1f} ms/step, "
                f"ratio {paired:.3f}x (median of {len(ours)} paired blocks; min-time ratio {min(ours) / min(plain):.3f}x)")
        if name.endswith("mlp"):
            flops = step_flops(OrbitClassifier(name).net, args.batch_size)
            line += f"; {flops / o / peak:.0%} of the matmul peak (plain {flops / p / peak:.0%})"
        print(line + f"; load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
