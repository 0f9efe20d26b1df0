"""What training the linearised network costs: `linearized(X)` against `X`, at the ranked track's settings.

One training step = forward, cross-entropy, backward, the paper's Adam step, in train mode (dropout
on), batch 512 of real embedded digits, bf16 autocast on the CPU (the track's `bf16-mixed`; the jvp
runs under autocast, so the linearised model trains in the same precision) and channels_last for
the convnet, one torch thread. Plain and linearised steps are timed in turns (`round_robin`), so load
drift hits both alike; the ratio is what to read, not the absolute figures. Peak memory: each model's
steps run in a fresh child process, which reports its maximum resident set size.

Also printed: how far the bf16-autocast output is from the fp32 output, for the network and for
its linearisation moved from w0 (the precision check behind training the linearisation in bf16).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linearized.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linearized.py --models paper_mlp --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from _timing import round_robin
from orbitbench.data import load_digits
from orbitbench.models import create_model
from orbitbench.run.module import paper_adam

BATCH = 512


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits("mnist5k")
    return digits.images[:BATCH].float().div(255).unsqueeze(1), digits.labels[:BATCH]  # [512, 1, 28, 28], [512]


def stepper(name: str, bf16: bool, steps: int):
    """A callable running `steps` training steps of model `name` (built from seed 0)."""
    torch.manual_seed(0)
    net = create_model(name).train()
    images, labels = batch()
    if "convnet" in name:
        net, images = net.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    optimizer = paper_adam(net.parameters())
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def run() -> None:
        for _ in range(steps):
            with autocast():
                loss = F.cross_entropy(net(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def peak_memory_mb(name: str, bf16: bool, steps: int) -> float:
    """Maximum resident set size (MB) of a child process that builds `name` and trains `steps` steps."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import torch; torch.set_num_threads(1); "
            f"import bench_linearized as b, resource; b.stepper({name!r}, {bf16}, {steps})(); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bf16_error(name: str) -> float:
    """Relative distance of the bf16-autocast and fp32 outputs of model `name` (a linearised one moved
    from w0 by 0.01-scale noise) on 64 digits, eval mode."""
    torch.manual_seed(0)
    net = create_model(name).eval()
    with torch.no_grad():
        for p in getattr(net, "weights", {}).values():
            p.add_(0.01 * torch.randn_like(p))
        images = batch()[0][:64]
        exact = net(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            approx = net(images).float()
    return float((approx - exact).norm() / exact.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["paper_mlp", "paper_convnet"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed turn")
    parser.add_argument("--fp32", action="store_true", help="fp32 instead of bf16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bf16 = not args.fp32
    results = {}
    for name in args.models:
        pair = {"plain": stepper(name, bf16, args.steps), "linearized": stepper(f"linearized({name})", bf16, args.steps)}
        seconds = round_robin(pair, args.rounds, warmup=True)
        rate = {k: args.steps / v for k, v in seconds.items()}
        memory = {k: peak_memory_mb(n, bf16, 2) for k, n in (("plain", name), ("linearized", f"linearized({name})"))}
        results[name] = {
            "steps_per_s": rate, "throughput_ratio": rate["linearized"] / rate["plain"],
            "peak_rss_mb": memory,
            "bf16_vs_fp32_output_error": {"plain": bf16_error(name), "linearized": bf16_error(f"linearized({name})")},
        }
        print(f"{name}: plain {rate['plain']:.2f} steps/s, linearized {rate['linearized']:.2f} steps/s, "
              f"ratio {rate['linearized'] / rate['plain']:.3f}; peak RSS {memory['plain']:.0f} MB vs "
              f"{memory['linearized']:.0f} MB; bf16 vs fp32 output error {results[name]['bf16_vs_fp32_output_error']}",
              flush=True)  # fmt: skip
    print(json.dumps({"batch": BATCH, "precision": "bf16 autocast" if bf16 else "fp32", "threads": 1,
                      "load_average": os.getloadavg(), "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
