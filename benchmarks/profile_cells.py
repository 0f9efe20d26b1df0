"""Where a ranked-track (`mnist-cpu`) cell's time goes, per cell type, on a short slice of the cell.

    OMP_NUM_THREADS=1 python benchmarks/profile_cells.py                       # every cell type, n_angles 8
    OMP_NUM_THREADS=1 python benchmarks/profile_cells.py --types paper_mlp --n-angles 4 8
    OMP_NUM_THREADS=1 python benchmarks/profile_cells.py --before /tmp/ob-before   # + a checkout to compare

Each cell type runs its sweep file's own `orbitbench fit` command line (`orbitbench.sweep.spec.fit_argv`,
leave-out class 5, in-process, one torch thread) cut to a slice: `--steps` training steps, one
validation of `--val-batches` batches per split, and the eval-mode pass over the training split
(`split_accuracy`, the record's train accuracy) on `--train-eval-batches` batches. Phases are timed by
wrapping the hooks the loop calls (no profiler in the loop): posing (`on_after_batch_transfer`),
forward + loss (the method's `training_step`), logging + metrics (the rest of
`OrbitClassifier.training_step`), backward (`on_before_backward` -> `on_after_backward`), optimiser (->
the optimiser's step post-hook), per-step callbacks (reseeding), Lightning (the rest of the step: fetch,
zero_grad, loop). The steady steps (after `--warmup`) are averaged and scaled to the cell's step count,
the eval slices to the splits' batch counts, checkpoint saves to one per epoch; start-up (trainer set-up
to the first step, the pose cache's build included) and the fit-start / fit-end callbacks count as
measured. The projected cell time is a projection from the slice, not a measured cell.

`--before DIR` (a checkout of another commit, e.g. `git worktree add /tmp/ob-before HEAD~3`) runs the
same slices with that code, alternating before / after per cell type in subprocesses.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# cell type -> (sweep file, model, method, steps in the slice)
CELL_TYPES = {
    "paper_mlp": ("sweeps/mnist_cpu.yaml", "paper_mlp", "supervised", 80),
    "paper_convnet": ("sweeps/mnist_cpu.yaml", "paper_convnet", "supervised", 30),
    "c4_pooled(paper_mlp)": ("sweeps/mnist_cpu_invariant.yaml", "c4_pooled(paper_mlp)", "supervised", 40),
    "steerable_cnn_c4": ("sweeps/mnist_cpu_invariant.yaml", "steerable_cnn_c4", "supervised", 12),
    "paper_mlp+pose_consistency": ("sweeps/mnist_cpu_challengers.yaml", "paper_mlp", "pose_consistency", 60),
    "paper_mlp+latent_operator": ("sweeps/mnist_cpu_challengers.yaml", "paper_mlp", "latent_operator", 60),
}
STEP_PHASES = ("posing", "forward + loss", "logging + metrics", "backward", "optimiser", "per-step callbacks", "Lightning")
STEP_HOOKS = {"on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
              "on_before_optimizer_step", "on_before_zero_grad"}


class _Limited:
    """A DataModule seen through a cap on batches per split loader (the train-split eval slice)."""

    def __init__(self, data, batches: int) -> None:
        self._data, self._batches = data, batches

    def __getattr__(self, name: str):
        return getattr(self._data, name)

    def split_dataloader(self, name: str, sampler=None):
        return itertools.islice(self._data.split_dataloader(name, sampler), self._batches)


def _profile_one(cell_type: str, n_angles: int, args) -> dict:
    """Run one slice in this process and return its phase times (seconds) and scale factors."""
    import lightning as L
    import torch

    from orbitbench.run import cli, module
    from orbitbench.sweep.spec import Cell, fit_argv, load_sweep_file

    torch.set_num_threads(1)
    sweep, model, method, steps = CELL_TYPES[cell_type]
    steps = args.steps or steps
    spec = load_sweep_file(REPO / sweep)
    settings = {**spec.fit, **spec.model_fit.get(model, {})}
    acc: dict[str, float] = defaultdict(float)
    state = {"stage": "startup", "t": 0.0, "saves": 0, "first_posing": None, "step_times": [], "steps": 0}
    step_acc: list[dict[str, float]] = []

    def timed(key_fn, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[key_fn()] += time.perf_counter() - start
        return wrapper

    class PhaseTimer(L.Callback):
        def setup(self, trainer, pl_module, stage):
            state["t0"] = time.perf_counter()
            dm = state["dm"] = trainer.datamodule
            original = dm.on_after_batch_transfer

            def posing(batch, idx):
                start = time.perf_counter()
                out = original(batch, idx)
                seconds = time.perf_counter() - start
                if state["stage"] == "train" and state["first_posing"] is None:
                    state["first_posing"] = seconds
                else:
                    acc[f"{state['stage']}:posing"] += seconds
                return out
            dm.on_after_batch_transfer = posing
            method_step = pl_module.method.training_step
            pl_module.method.training_step = timed(lambda: "train:forward + loss", method_step)
            pl_module.training_step = timed(lambda: "train:training_step", pl_module.training_step)
            save = trainer.save_checkpoint

            def counted_save(*a, **k):
                state["saves"] += 1
                return save(*a, **k)
            trainer.save_checkpoint = timed(lambda: "checkpoints", counted_save)
            for callback in trainer.callbacks:
                if callback is self:
                    continue
                for name in dir(type(callback)):
                    if (name.startswith("on_") or name in ("setup", "teardown")) and \
                            getattr(type(callback), name) is not getattr(L.Callback, name, None):
                        where = "step" if name in STEP_HOOKS else "fit"
                        key = f"{where}:callback {type(callback).__name__}.{name}"
                        setattr(callback, name, timed(lambda key=key: key, getattr(callback, name)))

        def on_train_start(self, trainer, pl_module):
            acc["startup"] += time.perf_counter() - state["t0"]
            for optimizer in trainer.optimizers:
                optimizer.register_step_post_hook(lambda *a: self._mark("optimiser"))
            state["stage"], state["t"] = "train", time.perf_counter()

        def _mark(self, phase):
            now = time.perf_counter()
            acc[f"train:{phase}"] += now - state["mark"]
            state["mark"] = now

        def on_before_backward(self, trainer, pl_module, loss):
            state["mark"] = time.perf_counter()

        def on_after_backward(self, trainer, pl_module):
            self._mark("backward")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = time.perf_counter()
            acc["train:total"] += now - state["t"]
            state["t"] = now
            state["steps"] += 1
            if state["steps"] == args.warmup:
                step_acc.append(dict(acc))

        def on_validation_start(self, trainer, pl_module):
            state["stage"], state["tv"] = "eval", time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            acc["eval:validation"] += time.perf_counter() - state["tv"]
            state["stage"] = "end"

    original_split_accuracy = module.split_accuracy

    def split_accuracy(net, data, split, device, *a, **k):
        start = time.perf_counter()
        try:
            return original_split_accuracy(net, _Limited(data, args.train_eval_batches), split, device, *a, **k)
        finally:
            acc["eval:train split"] += time.perf_counter() - start
    module.split_accuracy = split_accuracy
    cell = Cell(model=model, n_poses=n_angles, leave_out_class=5, seed=0, method=method)
    with tempfile.TemporaryDirectory(prefix="profile_cells_") as tmp:
        argv = fit_argv(spec, cell, Path(tmp)) + [
            f"--trainer.max_steps={steps}", "--trainer.check_val_every_n_epoch=null",
            f"--trainer.val_check_interval={steps}", f"--trainer.limit_val_batches={args.val_batches}",
            *args.extra,
        ]
        original_fit = L.Trainer.fit

        def fit(self, *a, **k):  # the CLI's trainer, with the timer appended to its callbacks
            self.callbacks.append(PhaseTimer())
            return original_fit(self, *a, **k)
        L.Trainer.fit = fit
        start = time.perf_counter()
        code = cli.run_lightning_cli(argv)
        wall = time.perf_counter() - start
        L.Trainer.fit = original_fit
        if code:
            raise SystemExit(f"orbitbench: {cell_type} n_angles {n_angles}: fit exited {code}")
    dm = state["dm"]
    batch = dm.hparams.batch_size
    n_batches = {name: math.ceil(len(pairs) / batch) for name, pairs in dm.splits.items()}
    epochs = int(settings.get("trainer.max_epochs", 1))
    cell_steps = int(settings["trainer.max_steps"]) if settings.get("trainer.max_steps") else epochs * n_batches["train"]
    cell_epochs = math.ceil(cell_steps / n_batches["train"])
    warm = step_acc[0] if step_acc else {}
    steady = state["steps"] - args.warmup
    per_step = {k.split(":", 1)[1]: (acc[k] - warm.get(k, 0.0)) / steady for k in acc if k.startswith("train:")}
    step_callbacks = sum(v - warm.get(k, 0.0) for k, v in acc.items() if k.startswith("step:")) / steady
    val_run = sum(min(args.val_batches, n_batches[s]) for s in ("in_test", "out_test"))
    return {
        "cell_type": cell_type, "n_angles": n_angles, "slice_steps": state["steps"], "steady_steps": steady,
        "cell_steps": cell_steps, "cell_epochs": cell_epochs, "wall_s": wall, "per_step": per_step,
        "per_step_callbacks": step_callbacks,
        "startup": acc["startup"], "first_posing": state["first_posing"] or 0.0,
        "fit_callbacks": {k.split(":", 1)[1]: v for k, v in acc.items() if k.startswith("fit:") and v > 0.005},
        "checkpoint_per_save": acc["checkpoints"] / max(state["saves"], 1),
        "validation": acc["eval:validation"] * (n_batches["in_test"] + n_batches["out_test"]) / val_run,
        "train_eval": acc["eval:train split"] * n_batches["train"] / min(args.train_eval_batches, n_batches["train"]),
    }


def summarize(result: dict) -> dict[str, float]:
    """Projected seconds per phase for the whole cell."""
    step = result["per_step"]
    n = result["cell_steps"]
    known = sum(step.get(p, 0.0) for p in ("forward + loss", "backward", "optimiser", "posing")) + result["per_step_callbacks"]
    logging = step.get("training_step", 0.0) - step.get("forward + loss", 0.0)
    out = {
        "steps: posing": step.get("posing", 0.0) * n,
        "steps: forward + loss": step.get("forward + loss", 0.0) * n,
        "steps: logging + metrics": logging * n,
        "steps: backward": step.get("backward", 0.0) * n,
        "steps: optimiser": step.get("optimiser", 0.0) * n,
        "steps: per-step callbacks": result["per_step_callbacks"] * n,
        "steps: Lightning (fetch, zero_grad, loop)": (step.get("total", 0.0) - known - logging) * n,
        "eval: validation (in-test + out-test)": result["validation"],
        "eval: training split (eval mode)": result["train_eval"],
        "checkpoints (one per epoch)": result["checkpoint_per_save"] * result["cell_epochs"],
        "fit-start/end callbacks": sum(v for k, v in result["fit_callbacks"].items() if "ModelCheckpoint" not in k),
        "start-up (to the first step)": result["startup"] + result["first_posing"],
    }
    return out


def print_table(results: list[dict], labels: list[str]) -> None:
    """One Markdown table: phases as rows, each result's projected seconds and share as columns."""
    rows = [summarize(r) for r in results]
    head = " | ".join(f"{label} s | share" for label in labels)
    print(f"| phase | {head} |\n|---|" + "---:|---:|" * len(labels))
    for phase in rows[0]:
        cells = " | ".join(f"{row[phase]:.1f} | {row[phase] / sum(row.values()):.0%}" for row in rows)
        print(f"| {phase} | {cells} |")
    totals = " | ".join(f"**{sum(row.values()):.0f}** | " for row in rows)
    print(f"| **projected cell** | {totals}|")
    steps = " | ".join(f"{1000 * r['per_step'].get('total', 0):.1f} ms/step x {r['cell_steps']} | " for r in results)
    print(f"| step (steady mean) x cell steps | {steps}|")


def _subprocess(cell_type: str, n_angles: int, args, code_dir: Path | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if code_dir is not None:
        for package in ("models", "datamodules"):  # the installed layout, so that this checkout imports whole
            link = code_dir / "orbitbench" / package
            if not link.exists():
                link.symlink_to(code_dir / package)
        env["PYTHONPATH"] = str(code_dir)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--one", cell_type, "--n-angles", str(n_angles), "--json", out.name,
                   "--warmup", str(args.warmup), "--val-batches", str(args.val_batches),
                   "--train-eval-batches", str(args.train_eval_batches)]
        command += [f"--extra={flag}" for flag in (args.extra if code_dir is None else [])] + (["--steps", str(args.steps)] if args.steps else [])
        done = subprocess.run(command, env=env, capture_output=not args.verbose, text=True)
        if done.returncode:
            raise SystemExit(f"orbitbench: profiling {cell_type} failed:\n{(done.stderr or '')[-3000:]}")
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=list(CELL_TYPES), choices=list(CELL_TYPES))
    parser.add_argument("--n-angles", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=0, help="steps in the slice (default: per cell type)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the per-step mean")
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument("--train-eval-batches", type=int, default=20)
    parser.add_argument("--before", type=Path, default=None, help="a checkout to profile alternately with this one")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    parser.add_argument("--extra", nargs="*", action="extend", default=[], help="more fit flags for this checkout's runs, "
                        "e.g. --extra=--model.optimizer.fused=true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.one:  # a child: one slice, raw result to --json
        args.json.write_text(json.dumps(_profile_one(args.one, args.n_angles[0], args)))
        return
    print(f"load average: {os.getloadavg()}; torch 1 thread per process; slices extrapolated to whole cells")
    raw = []
    for cell_type, n_angles in itertools.product(args.types, args.n_angles):
        pair = ([("before", _subprocess(cell_type, n_angles, args, args.before.resolve()))] if args.before else [])
        pair.append(("after" if args.before else "this", _subprocess(cell_type, n_angles, args, None)))
        raw.append({"cell_type": cell_type, "n_angles": n_angles, **{k: v for k, v in pair}})
        print(f"\n### {cell_type}, n_angles {n_angles} (load average {os.getloadavg()[0]:.2f})\n")
        print_table([v for _, v in pair], [k for k, _ in pair])
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
