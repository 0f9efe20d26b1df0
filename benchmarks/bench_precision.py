"""Training-step speed of the paper models under the CPU's fast paths, against fp32 eager.

Variants of one training step (forward, cross-entropy, backward, the paper's Adam step) on the same
posed batch, each with its own copy of the same initial network:

    fp32             eager float32: the baseline every ratio is taken against
    bf16             torch.autocast(bfloat16): what `--trainer.precision bf16-mixed` does on CPU
    channels_last    NHWC weights and inputs (convolutional models only)
    bf16+cl          both
    bf16+fused       the fastest eager setting with Adam's fused kernel (`fused=True`)
    compile          torch.compile of the network, float32
    compile+bf16     torch.compile under bfloat16 autocast (+ channels_last for convolutions)

All variants are timed in turns, round by round (`_timing.round_robin`), so load drift on a shared
machine hits them alike; the ratios are medians over rounds. Compilation happens in an untimed
warm-up step. Sapphire-Rapids-class CPUs run bfloat16 matrix products on AMX tiles (oneDNN);
`lscpu` flags are printed so a reader can tell which machine it was.

    .venv/bin/python benchmarks/bench_precision.py                         # the three paper models
    .venv/bin/python benchmarks/bench_precision.py --models paper_mlp --rounds 9
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _timing import round_robin
from torch import nn

from orbitbench.datamodules import RotatedMNIST
from orbitbench.models import create_model
from orbitbench.run.module import paper_adam

# Steps per timed round: about a second of work each on 2 cores (ViT is ~200 samples/s there).
STEPS = {"paper_mlp": 20, "paper_convnet": 3, "paper_vit": 1}


def cpu_description() -> str:
    name, flags = platform.processor() or "cpu", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name") and name in ("", "cpu", platform.machine()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    fast = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if flag in flags]
    return f"{name}; {os.cpu_count()} cores; flags: {', '.join(fast) or 'none of avx512/amx'}"


def is_convolutional(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in net.modules())


def make_step(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, bf16: bool,
              channels_last: bool, compiled: bool, steps: int, fused: bool = False) -> Callable[[], None]:
    """`steps` training steps of `net` (modified in place) on one batch, as the variant says."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = paper_adam(net.parameters(), fused=fused)
    forward = torch.compile(net) if compiled else net
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def run() -> None:
        for _ in range(steps):
            with autocast():
                loss = F.cross_entropy(forward(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def variants(model_name: str, images: torch.Tensor, labels: torch.Tensor, steps: int,
             with_compile: bool) -> dict[str, Callable[[], None]]:
    torch.manual_seed(125)
    base = create_model(model_name).train()
    conv = is_convolutional(base)
    table = {"fp32": dict(bf16=False, channels_last=False, compiled=False),
             "bf16": dict(bf16=True, channels_last=False, compiled=False)}
    if conv:
        table["channels_last"] = dict(bf16=False, channels_last=True, compiled=False)
        table["bf16+cl"] = dict(bf16=True, channels_last=True, compiled=False)
    table["bf16+fused"] = dict(bf16=True, channels_last=conv, compiled=False, fused=True)
    if with_compile:
        table["compile"] = dict(bf16=False, channels_last=False, compiled=True)
        table["compile+bf16"] = dict(bf16=True, channels_last=conv, compiled=True)
    return {name: make_step(copy.deepcopy(base), images, labels, steps=steps, **options)
            for name, options in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["paper_mlp", "paper_convnet", "paper_vit"])
    parser.add_argument("--batch-size", type=int, default=2048, help="the paper's batch size")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    dm = RotatedMNIST(n_angles=8, batch_size=args.batch_size, interpolation="nearest", source="mnist5k", seed=125)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    images, labels = batch.image, batch.label
    print(f"machine: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"batch: {images.shape[0]} posed digits (RotatedMNIST n_angles 8, nearest); {args.rounds} rounds, "
          "variants in turns; samples/s from the median round")
    for name in args.models:
        steps = STEPS.get(name, 2)
        work = variants(name, images, labels, steps, with_compile=not args.no_compile)
        start = time.perf_counter()
        for run in work.values():  # untimed: compilation, oneDNN primitive caches
            run()
        warm = time.perf_counter() - start
        medians = round_robin(work, args.rounds)
        base = medians["fp32"]
        cells = [f"{variant} {steps * images.shape[0] / seconds:,.0f}/s ({base / seconds:.2f}x)"
                 for variant, seconds in medians.items()]
        print(f"{name:>14}: " + " | ".join(cells) + f"  [warm-up incl. compile {warm:.0f} s]", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
