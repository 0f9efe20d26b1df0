"""The speed-ups that change last bits (issue 35 item 3), each against the current code path, in turns.

    OMP_NUM_THREADS=1 python benchmarks/bench_last_bits.py

Each candidate is timed against what the seeded entries run, alternating call by call
(`_timing.round_robin`), one torch thread, on the track's shapes (batch 512, bf16 autocast):
- fused Adam: `paper_adam(fused=True)` against the default (foreach) Adam, one step of paper_mlp's
  parameters with fresh gradients;
- training-split evaluation under autocast (`OrbitClassifier(train_eval_autocast=True)`): one eval-mode
  forward pass of a batch of 512, float32 against bf16 autocast, for each model of the track;
- the cheaper dropout mask (`paper_mlp(dropout_mask="uniform")`): one paper_mlp training step's forward
  and backward (autocast bf16) with `nn.Dropout` against `UniformDropout`.
A step's or a cell's gain is the ratio times the phase's share in benchmarks/profile_cells.py.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from _timing import round_robin

from orbitbench.models import create_model
from orbitbench.run.module import paper_adam


def adam(rounds: int) -> dict[str, float]:
    net = create_model("paper_mlp")
    grads = [torch.randn_like(p) for p in net.parameters()]
    optimizers = {"foreach Adam (default)": paper_adam(net.parameters()), "fused Adam": paper_adam(net.parameters(), fused=True)}

    def step(optimizer):
        def run():
            for p, g in zip(net.parameters(), grads):
                p.grad = g.clone()
            optimizer.step()
        return run
    return round_robin({k: step(o) for k, o in optimizers.items()}, rounds, warmup=True)


def evaluation(model: str, rounds: int) -> dict[str, float]:
    net = create_model(model).eval()
    if model != "paper_mlp" and "mlp" not in model:
        net = net.to(memory_format=torch.channels_last)
    x = torch.randn(512, 1, 28, 28)

    @torch.no_grad()
    def fp32():
        net(x)

    @torch.no_grad()
    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)
    return round_robin({"float32": fp32, "bf16 autocast": bf16}, rounds, warmup=True)


def dropout(rounds: int) -> dict[str, float]:
    nets = {"nn.Dropout (bernoulli_)": create_model("paper_mlp"), "UniformDropout": create_model("paper_mlp", dropout_mask="uniform")}
    x, y = torch.randn(512, 1, 28, 28), torch.randint(0, 10, (512,))

    def step(net):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x), y)
            loss.backward()
        return run
    return round_robin({k: step(n) for k, n in nets.items()}, rounds, warmup=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # as in a fit
    print(f"one torch thread; load average {os.getloadavg()}")
    cases = {"optimiser step (paper_mlp)": adam(args.rounds), "dropout: paper_mlp forward + backward": dropout(args.rounds)}
    for model in ("paper_mlp", "c4_pooled(paper_mlp)", "paper_convnet", "steerable_cnn_c4"):
        cases[f"eval forward, batch 512 ({model})"] = evaluation(model, max(5, args.rounds // 3))
    print("| what | current ms | candidate ms | candidate / current |\n|---|---:|---:|---:|")
    for what, times in cases.items():
        (base, b), (cand, c) = times.items()
        print(f"| {what}: {cand} vs {base} | {1000 * b:.2f} | {1000 * c:.2f} | {c / b:.2f}x |")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
