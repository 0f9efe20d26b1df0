"""The GPU check: one short cell of each paper model on full MNIST, and the CNN kernels on CUDA vs CPU.

Run through `benchmarks/gpu_check.sh` (which sets up the machine); by hand:
    python benchmarks/gpu_check.py [--epochs 2] [--n-angles 16] [--out DIR] [--dry-run]

1. Cells: `orbitbench fit --config configs/paper_fig1.yaml --config models/<model>.yaml` for
   paper_mlp, paper_convnet and paper_vit (the paper's Adam, batch 2048, nearest rotations), full
   MNIST (`--data.source mnist`: sha256-checked, never the subset), n_angles 16, leave-out class 5,
   `--epochs` epochs (a short budget, not the paper's 22), each capped by `--max-seconds` of
   training. Printed per model: train (eval mode) / in-test / out-test accuracy, training samples/s
   per epoch (first to last batch, device synchronised; the first epoch includes warm-up), the fit's
   wall time, and the paper's Fig. 1 grid time projected from the last epoch's throughput.
2. Kernels: the closed-form infinite-width kernels (orbitbench.theory.kernels, float64) of one CNN-GAP
   rotation pair, one CNN-GAP translation pair by its block row, one CNN-FC rotation pair at n = 128
   and an MLP NTK block, on CUDA and on the CPU: time of each, ratio, max relative difference, and
   the paper's Fig. 5 grid time projected from the CUDA cost per CNN-GAP entry.
`--dry-run`: the same steps at toy size on the CPU (2 digits per class, one epoch; kernels CPU vs
CPU when no GPU is there), to check the script itself in well under a minute.
A summary goes to <out>/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = ("paper_mlp", "paper_convnet", "paper_vit")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Throughput(L.Callback):
    """Training samples and seconds of each epoch, from the first batch's start to the last batch's
    end (device synchronised there only); kept in the run record as its summary."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            _sync()
            self._start, self._count = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._count += batch.label.numel()
        if batch_idx == trainer.num_training_batches - 1:
            _sync()
            self.samples.append(self._count)
            self.seconds.append(round(time.perf_counter() - self._start, 4))

    def record_summary(self) -> dict:
        return {"samples": self.samples, "seconds": self.seconds}


def fit_cell(model: str, args, source: str, root: Path, extra: tuple[str, ...] = ()) -> dict:
    from orbitbench.run.cli import run_lightning_cli

    save_dir = root / model / ("again" if extra else "first")
    argv = ["fit", "--config", str(REPO / "configs/paper_fig1.yaml"), "--config", str(REPO / f"models/{model}.yaml"),
            "--data.source", source, "--data.n_angles", str(args.n_angles), "--data.leave_out_class", "5",
            "--trainer.max_epochs", str(args.epochs), "--trainer.max_time", f"00:00:00:{args.max_seconds}",
            "--trainer.accelerator", "gpu" if args.device == "cuda" else "cpu", "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(save_dir),
            "--trainer.callbacks+=gpu_check.Throughput"]  # fmt: skip
    if args.dry_run:
        argv += ["--data.images_per_class", "2"]
    argv += list(extra)
    start = time.perf_counter()
    status = run_lightning_cli(argv)
    wall = time.perf_counter() - start
    records = sorted(save_dir.glob("*/version_*/record.json"))
    if status != 0 or not records:
        return {"model": model, "status": f"failed (exit {status}{', no record' if not records else ''})", "wall_s": round(wall, 1)}
    record = json.loads(records[-1].read_text())
    metrics, through = record["metrics"], record["callbacks"].get("Throughput", {})
    rates = [n / s for n, s in zip(through.get("samples", []), through.get("seconds", [])) if s > 0]
    return {"model": model, "status": "ok", "digits": record["data"].get("digits"), "images": record["data"].get("n_images"),
            "epochs": record["epochs"], "steps": record["global_step"], "train_acc": metrics["train_acc"],
            "in_test_acc": metrics["in_test_acc"], "out_test_acc": metrics["out_test_acc"],
            "samples_per_s": [round(r) for r in rates], "epoch_samples": through.get("samples"),
            "fit_wall_s": round(wall, 1), "extra_flags": list(extra)}  # fmt: skip


def timed(work, device: str, rounds: int) -> tuple[torch.Tensor, float]:
    """(result, median seconds over `rounds` after one untimed warm-up run)."""
    result = work()
    times = []
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = work()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return result, sorted(times)[len(times) // 2]


def kernel_checks(digits, args) -> list[dict]:
    from bench_cnn_kernels import PAPER_PAIRS, gram_entries, grid_entries_per_pair

    from orbitbench.theory import kernels
    from orbitbench.orbits import Rotation, Translation
    from orbitbench.theory.pairs import make_orbit_pairs

    small = args.dry_run
    rotation = make_orbit_pairs(digits, Rotation(2 if small else 16, "cubic"), 1, 124)
    shift = make_orbit_pairs(digits, Translation(4 if small else 14), 1, 124)
    big = make_orbit_pairs(digits, Rotation(4 if small else 64, "cubic"), 1, 124)
    flat = digits.images[: 256 if small else 4096].to(torch.float64).flatten(1) / 255  # [B, 784]
    cases = [
        ("CNN-GAP rotation pair", rotation.points, dict(arch="cnn_gap", b_std=None), False),
        ("CNN-GAP translation pair (block row)", shift.points, dict(arch="cnn_gap", b_std=None, group=shift.group), True),
        ("CNN-FC rotation pair", big.points, dict(arch="cnn_fc", b_std=None), False),
        ("MLP NTK (depth 1)", flat, dict(arch="mlp"), None),
    ]
    out = []
    for name, points, options, exact in cases:
        if exact is None:  # one kernel block over images, not pairs
            run = lambda x: kernels.infinite_kernel(x, **options)  # noqa: E731
            entries = points.shape[0] ** 2
        else:
            run = lambda x: kernels.pair_kernels(x, **options)  # noqa: E731
            entries = gram_entries(points.shape[1], exact)
        cpu, cpu_s = timed(lambda: run(points), "cpu", args.rounds)
        on = points.to(args.kernel_device)
        dev, dev_s = timed(lambda: run(on), args.kernel_device, args.rounds)
        gap = float((dev - cpu).abs().max() / cpu.abs().max())
        row = {"kernel": name, "n": int(points.shape[1] if exact is not None else points.shape[0]), "entries": entries,
               "cpu_s": round(cpu_s, 4), "device": args.kernel_device, "device_s": round(dev_s, 4),
               "speedup": round(cpu_s / dev_s, 1), "max_rel_diff": gap}  # fmt: skip
        if name == "CNN-GAP rotation pair" and not small:
            row["fig5_grid_projection_h"] = round(PAPER_PAIRS * grid_entries_per_pair() * dev_s / entries / 3600, 2)
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each cell (the paper trains 22)")
    parser.add_argument("--n-angles", type=int, default=16)
    parser.add_argument("--max-seconds", type=int, default=150, help="cap on each cell's training time")
    parser.add_argument("--rounds", type=int, default=3, help="timed kernel runs (median), after one warm-up")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks/out/gpu_check"))
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default <out>/runs; keep them off $OUT)")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU, to check the script")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if args.dry_run:
        args.epochs, args.rounds, args.max_seconds = 1, 1, 60
    elif not cuda:
        print("gpu_check: no CUDA device here; use --dry-run for the CPU check", file=sys.stderr)
        return 2
    args.device = "cuda" if cuda and not args.dry_run else "cpu"
    args.kernel_device = "cuda" if cuda else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.runs or args.out / "runs"
    torch.set_float32_matmul_precision("highest")  # fp32 as on the CPU tracks; speed options are measured apart

    from orbitbench.data import load_digits
    from orbitbench.data_cache import installed

    source = "mnist" if installed() else "mnist5k"
    if source != "mnist" and not args.dry_run:
        print("gpu_check: full MNIST is not installed (run `orbitbench data`); stopping", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"gpu_check: {where}; {os.cpu_count()} CPU cores, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"lightning {L.__version__}; data {source}; n_angles {args.n_angles}, {args.epochs} epoch(s) per cell"
          f"{' [dry run]' if args.dry_run else ''}", flush=True)  # fmt: skip
    summary = {"device": where, "torch": torch.__version__, "source": source, "n_angles": args.n_angles,
               "epochs": args.epochs, "dry_run": args.dry_run, "cells": [], "kernels": []}  # fmt: skip
    for model in args.models:
        try:
            try:
                cell = fit_cell(model, args, source, runs)
            except RuntimeError as error:  # a CUDA op without a deterministic kernel: say so, run warn-only
                if "deterministic" not in str(error):
                    raise
                print(f"gpu_check: {model} under deterministic=True: {str(error).splitlines()[0]}; again with warn", flush=True)
                cell = fit_cell(model, args, source, runs, ("--trainer.deterministic", "warn"))
        except Exception as error:  # one model's failure must not cost the others their measurement
            traceback.print_exc()
            cell = {"model": model, "status": f"failed: {type(error).__name__}: {error}"[:300]}
        summary["cells"].append(cell)
        print(f"gpu_check cell: {json.dumps(cell)}", flush=True)
    try:
        summary["kernels"] = kernel_checks(load_digits(source), args)
    except Exception as error:
        traceback.print_exc()
        summary["kernels"] = [{"status": f"failed: {type(error).__name__}: {error}"[:300]}]
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(report(summary))
    return 0 if all(c.get("status") == "ok" for c in summary["cells"]) and "status" not in summary["kernels"][0] else 1


def report(summary: dict) -> str:
    from bench_training import fig1_estimate

    lines = ["", f"cells on {summary['device']} ({summary['source']}, n_angles {summary['n_angles']}, leave-out 5):",
             f"{'model':>14} | {'train':>5} | {'in-test':>7} | {'out-test':>8} | {'epochs':>6} | samples/s per epoch | fit wall s"]
    rates = {}
    for c in summary["cells"]:
        if c.get("status") != "ok":
            lines.append(f"{c['model']:>14} | {c.get('status')}")
            continue
        lines.append(f"{c['model']:>14} | {c['train_acc']:.3f} | {c['in_test_acc']:7.3f} | {c['out_test_acc']:8.3f} | "
                     f"{c['epochs']:>6} | {', '.join(f'{r:,}' for r in c['samples_per_s']):>19} | {c['fit_wall_s']}")
        if c["samples_per_s"]:
            rates[c["model"]] = c["samples_per_s"][-1]
    if rates and not summary["dry_run"]:
        lines += ["Fig. 1 grid from the last epoch's throughput (training only):", *fig1_estimate(rates)]
    lines.append("kernels (float64 closed form), device vs CPU:")
    for k in summary["kernels"]:
        lines.append("  " + ", ".join(f"{key} {value:.2e}" if key == "max_rel_diff" else f"{key} {value}" for key, value in k.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
