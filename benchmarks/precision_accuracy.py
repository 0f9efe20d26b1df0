"""Does the fast setting keep the accuracy? One cell per model, fp32 against bf16 (+ channels_last), two seeds each.

`bench_precision.py` says how much faster a training step is; this says whether the trained network
is the same network within seed noise: the same cell is trained with `--trainer.precision 32-true`
and with the fast setting, for two training seeds each, by `orbitbench fit` itself, and the run
records' train / in-test / out-test accuracies are tabulated side by side. The seed-to-seed spread
within one precision is the noise the difference between precisions is read against.

    .venv/bin/python benchmarks/precision_accuracy.py --out runs/precision_accuracy        # both models
    .venv/bin/python benchmarks/precision_accuracy.py --models paper_mlp --seeds 0 1 2

Cells (leave-out class 5, n_angles 8, nearest rotations, the paper's Adam):
  paper_mlp      2,000 digits per class of full MNIST, batch 512, 10 epochs
  paper_convnet  1,000 digits per class of full MNIST, batch 512, 8 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CELLS = {
    "paper_mlp": ["--trainer.max_epochs", "10", "--data.batch_size", "512", "--data.images_per_class", "2000"],
    "paper_convnet": ["--trainer.max_epochs", "8", "--data.batch_size", "512", "--data.images_per_class", "1000"],
}
SETTINGS = {
    "fp32": ["--trainer.precision", "32-true"],
    "bf16+cl": ["--trainer.precision", "bf16-mixed", "--model.channels_last", "true"],
}


def run_cell(model: str, setting: str, seed: int, out: Path, data: list[str]) -> dict:
    run_dir = out / f"{model}-{setting}-s{seed}"
    record = run_dir / "record.json"
    if not record.is_file():  # resumable: a finished cell is not trained again
        command = [sys.executable, "-m", "orbitbench", "fit",
                   "--config", str(REPO / "configs/paper_fig1.yaml"), "--config", str(REPO / f"models/{model}.yaml"),
                   "--seed_everything", str(seed), "--data.leave_out_class", "5", "--trainer.enable_progress_bar", "false",
                   "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", "",
                   "--trainer.logger.init_args.version", run_dir.name,
                   *data, *CELLS[model], *SETTINGS[setting]]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads(record.read_text())["metrics"]
    return {key: metrics[key] for key in ("train_acc", "in_test_acc", "out_test_acc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", type=Path, default=REPO / "runs/precision_accuracy")
    parser.add_argument("--data_dir", default=None, help="where full MNIST is (default: the installed cache)")
    args = parser.parse_args()
    data = ["--data.source", "mnist"] + (["--data.data_dir", args.data_dir] if args.data_dir else [])
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    print("| model | setting | seed | train | in-test | out-test |\n|---|---|---:|---:|---:|---:|")
    for model in args.models:
        for setting in SETTINGS:
            for seed in args.seeds:
                m = run_cell(model, setting, seed, args.out, data)
                print(f"| {model} | {setting} | {seed} | {m['train_acc']:.3f} | {m['in_test_acc']:.3f} | "
                      f"{m['out_test_acc']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
