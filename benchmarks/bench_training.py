"""Training throughput: the `orbitbench fit` Lightning loop vs a bare PyTorch loop, side by side.

Both loops train the same zoo model (same init), on the same RotatedMNIST batches (indices from
the DataModule's sampler, images posed per batch by `dm.on_after_batch_transfer`), with the
paper's optimiser and batch size, on the same device, in one process, alternating epoch by epoch so
that load drift on a shared machine hits both alike. The Lightning side is what the CLI runs: OrbitClassifier
(torchmetrics train accuracy, `self.log`), deterministic mode, per-step reseeding; validation,
checkpoints and loggers are off because the bare loop has none. Time per training epoch is taken
from epoch start to end (CUDA synchronised), first pair of epochs dropped as warm-up.

With a GPU, it also estimates the paper's full Fig. 1 grid time from the measured throughput.

    .venv/bin/python benchmarks/bench_training.py                       # CPU: paper_mlp, paper_convnet
    .venv/bin/python benchmarks/bench_training.py --models paper_mlp paper_convnet paper_vit --epochs 4 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F

from orbitbench.datamodules import RotatedMNIST
from orbitbench.run.module import OrbitClassifier, paper_adam
from orbitbench.run.cli import ReseedEachStep

# Paper Fig. 1 grid (docs/THEORY.md §1): full MNIST, n_angles 2..64, 10 leave-out classes, 22 epochs.
FIG1_IMAGES = 60_000
FIG1_ANGLES = (2, 4, 8, 16, 32, 64)
FIG1_CLASSES = 10
FIG1_EPOCHS = 22
FIG1_TRAIN_FRACTION = 0.9  # in-test takes 10% (out-test, 1/10 of one pose, is negligible here)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(args) -> RotatedMNIST:
    dm = RotatedMNIST(n_angles=args.n_angles, batch_size=args.batch_size, interpolation="nearest", seed=125)
    dm.setup("fit")
    return dm


class BareLoop:
    """The baseline: a hand-written epoch, same model init, data, batches and optimiser."""

    def __init__(self, model_name: str, dm: RotatedMNIST, device: torch.device) -> None:
        L.seed_everything(125, verbose=False)
        self.net = OrbitClassifier(model_name).net.to(device)
        self.optimizer = paper_adam(self.net.parameters())
        self.loader, self.dm, self.device = dm.train_dataloader(), dm, device

    def epoch(self, epoch: int) -> float:
        torch.use_deterministic_algorithms(True)  # as Trainer(deterministic=True) on the other side
        self.loader.sampler.set_epoch(epoch)
        self.net.train()
        _sync(self.device)
        start = time.perf_counter()
        for index_batch in self.loader:
            index_batch = type(index_batch)(*(t.to(self.device, non_blocking=True) for t in index_batch))
            batch = self.dm.on_after_batch_transfer(index_batch, 0)
            loss = F.cross_entropy(self.net(batch.image), batch.label)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _sync(self.device)
        return time.perf_counter() - start


class InterleavedTimer(L.Callback):
    """Time each Lightning training epoch, then run and time one bare epoch right after it.

    Epoch-by-epoch alternation (L, bare, L, bare, ...) exposes both loops to the same load
    on a shared machine; the paired ratios cancel slow drifts.
    """

    def __init__(self, bare: BareLoop) -> None:
        self.bare, self.lightning_times, self.bare_times = bare, [], []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.lightning_times.append(time.perf_counter() - self._start)
        self.bare_times.append(self.bare.epoch(trainer.current_epoch))


def measure(model_name: str, dm: RotatedMNIST, epochs: int, device: torch.device) -> tuple[list[float], list[float]]:
    """(Lightning, bare) seconds per epoch, first (warm-up) pair dropped."""
    timer = InterleavedTimer(BareLoop(model_name, dm, device))
    L.seed_everything(125, verbose=False)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[ReseedEachStep(), timer],
    )
    trainer.fit(OrbitClassifier(model_name), datamodule=dm)
    return timer.lightning_times[1:], timer.bare_times[1:]


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
    parser.add_argument("--models", nargs="+", default=None, help="default: paper_mlp paper_convnet (+ paper_vit on GPU)")
    parser.add_argument("--n-angles", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2048, help="the paper's batch size")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each loop, alternating; the first is warm-up")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or (["paper_mlp", "paper_convnet"] + (["paper_vit"] if device.type == "cuda" else []))
    dm = make_data(args)
    n_train = len(dm.splits["train"])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}, lightning {L.__version__}")
    print(f"data: RotatedMNIST({dm.digits.source}, n_angles={args.n_angles}, nearest), {n_train:,} train samples/epoch, "
          f"batch {args.batch_size}; {args.epochs} epochs of each loop, alternating epoch by epoch (first pair dropped)")
    print(f"{'model':>14} | {'bare s/epoch':>12} | {'Lightning s/epoch':>17} | {'bare samples/s':>14} | "
          f"{'Lightning samples/s':>19} | ratio (L/bare time)")
    throughput = {}
    for name in models:
        lit, bare = measure(name, dm, args.epochs, device)
        b, l_ = statistics.median(bare), statistics.median(lit)
        paired = statistics.median(x / y for x, y in zip(lit, bare))
        throughput[name] = n_train / l_
        print(f"{name:>14} | {b:12.3f} | {l_:17.3f} | {n_train / b:14,.0f} | {n_train / l_:19,.0f} | "
              f"{paired:.3f}x (median of {len(lit)} paired epochs; min-time ratio {min(lit) / min(bare):.3f}x)",
              flush=True)
    if device.type == "cuda":
        print("Fig. 1 grid on this device (3 models x 6 n_angles x 10 leave-out classes x 22 epochs, full MNIST):")
        print("\n".join(fig1_estimate(throughput)))


if __name__ == "__main__":
    main()
