"""Start-up of the console script against `import lightning`, the floor of every training command.

The goals: `orbitbench --help` and `orbitbench theory --help` under 1 s; `orbitbench fit --help` no
slower than `import lightning` + 2 s. Each command runs as a fresh process (what a user waits for),
timed in turns with the baseline so that machine load hits all of them alike.

    .venv/bin/python benchmarks/bench_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import round_robin  # noqa: E402

BIN = Path(sys.executable).parent


def command(*argv: str):
    def work() -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    orbitbench = str(BIN / "orbitbench")
    times = round_robin(
        {
            "python -c 'import lightning' (baseline)": command(sys.executable, "-c", "import lightning"),
            "orbitbench --help": command(orbitbench, "--help"),
            "orbitbench theory --help": command(orbitbench, "theory", "--help"),
            "orbitbench sweep run --help": command(orbitbench, "sweep", "run", "--help"),
            "orbitbench fit --help": command(orbitbench, "fit", "--help"),
        },
        rounds,
        warmup=True,
    )
    baseline = times["python -c 'import lightning' (baseline)"]
    print(f"load average {os.getloadavg()[0]:.1f}, medians of {rounds} turns")
    print("| command | seconds | minus `import lightning` |\n|---|---:|---:|")
    for name, seconds in times.items():
        print(f"| `{name}` | {seconds:.2f} | {seconds - baseline:+.2f} |")


if __name__ == "__main__":
    main()
