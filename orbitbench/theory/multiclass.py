"""`orbitbench theory multiclass`: paper Fig. 6B, ten-class one-vs-many spectral accuracy.

S seed digits per class, their rotation orbits and one MLP NTK Gram matrix over all of them. An
orbit of leave-out class A is predicted right iff, for every other class B, the spectral
prediction `1 - Eq. 7` averaged over B's S orbits is positive (docs/THEORY.md §5). With `train`,
zoo networks are trained on exactly these points (`theory.networks`), pose 0 of class A held out,
and their out-test accuracy is plotted against the spectral prediction.
"""

from __future__ import annotations

import types
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from orbitbench import spectral
from orbitbench.errors import OrbitbenchError
from orbitbench.kernels import infinite_kernel
from orbitbench.orbits import make_group
from orbitbench.pairs import class_orbits
from orbitbench.theory._run import DigitData, RunFolder, documents_data_arguments, execute, ridge_note

CLASSES = list(range(10))


@documents_data_arguments
def multiclass(
    n_angles: Sequence[int] = (2, 4, 8, 16),
    seeds_per_class: int = 4,
    depth: int = 1,
    compare: Path | None = None,
    chunk: int = 1024,
    train: bool = False,
    models: Sequence[str] = ("paper_mlp",),
    steps: int = 1000,
    batch_size: int = 64,
    leave_out_classes: Sequence[int] | None = None,
    data: DigitData = DigitData(),
    device: str = "cpu",
    out: Path | None = None,
) -> Path:
    """Fig. 6B: ten-class one-vs-many spectral accuracy against n_angles, and trained networks.

    Args:
        n_angles: rotation orbit sizes (paper 2..64).
        seeds_per_class: seed digits per class S (paper 13); prefix-stable in S.
        depth: hidden layers of the MLP NTK.
        compare: results.csv of an `orbitbench sweep` on RotatedMNIST: its out-test accuracy alongside.
        chunk: orbit pairs per batch (memory ~ chunk * (2N)^2 * 8 bytes).
        train: train `models` on exactly the kernel side's points (see `theory.networks`).
        models: zoo models to train (`orbitbench.models.list_models()`).
        steps: optimiser steps of each network (the paper's Adam; enough to fit the train split).
        batch_size: training batch size.
        leave_out_classes: classes to train a network for (default all ten).
    """
    classes = list(CLASSES if leave_out_classes is None else leave_out_classes)
    if any(c not in CLASSES for c in classes):
        raise OrbitbenchError(f"leave_out_classes={classes}: expected digit classes 0-9")
    if train and not models:
        raise OrbitbenchError("--train needs at least one model in --models")
    network = read_network_accuracy(Path(compare)) if compare is not None else {}
    return execute("multiclass", run, dict(locals(), n_angles=list(n_angles), models=list(models),
                                           leave_out_classes=classes, network=network))


SWEEP_COLUMNS = ("model", "datamodule", "n_poses", "out_test_acc")


def read_network_accuracy(path: Path) -> dict[str, dict[int, float]]:
    """Mean out-test accuracy per model and n_angles from a sweep's results.csv (RotatedMNIST rows)."""
    if not path.is_file():
        raise OrbitbenchError(f"--compare {path}: no such file (expected a sweep results.csv)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in SWEEP_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise OrbitbenchError(f"--compare {path}: missing column(s) {', '.join(missing)} (expected a sweep results.csv)")
    sums: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        if row["datamodule"] != "RotatedMNIST" or row["out_test_acc"] in ("", None):
            continue
        try:
            n, accuracy = int(row["n_poses"]), float(row["out_test_acc"])
        except ValueError:
            raise OrbitbenchError(f"--compare {path}: bad n_poses/out_test_acc {row['n_poses']!r}/{row['out_test_acc']!r}") from None
        sums.setdefault(row["model"], {}).setdefault(n, []).append(accuracy)
    if not sums:
        raise OrbitbenchError(f"--compare {path}: no RotatedMNIST rows with an out_test_acc")
    return {model: {n: float(np.mean(v)) for n, v in sorted(by_n.items())} for model, by_n in sums.items()}


def pair_predictions(gram: torch.Tensor, n_poses: int, n_classes: int, per_class: int, chunk: int) -> torch.Tensor:
    """`1 - Eq. 7` of every ordered orbit pair of an orbit-major Gram matrix -> [C, S, C, S]."""
    m = n_classes * per_class
    first, second = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    first, second = first.reshape(-1), second.reshape(-1)
    distinct = first != second  # an orbit against itself has no Nyquist contrast
    predictions = torch.zeros(m * m, dtype=gram.dtype)
    index = distinct.nonzero().squeeze(1)
    for part in index.split(chunk):
        pair_grams = spectral.orbit_pair_kernels(gram, n_poses, first[part], second[part])  # [p, 2N, 2N]
        predictions[part] = spectral.spectral_prediction(spectral.circularize(pair_grams))
    return predictions.reshape(n_classes, per_class, n_classes, per_class)


def run(args: types.SimpleNamespace, folder: RunFolder) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from orbitbench.data import load_digits
    from orbitbench.theory.networks import fit_out_test_accuracy, training_datamodule  # Lightning: only with --train

    digits = load_digits(args.source, args.data_dir)
    rows, accuracy, trained = [], {}, {model: {} for model in args.models} if args.train else {}
    fits = [(n, label, model) for n in args.n_angles for label in args.leave_out_classes for model in trained]
    progress = tqdm(total=len(fits), desc="multiclass networks", unit="fit", disable=not fits)
    for n in args.n_angles:
        group = make_group("rotation", n, interpolation=args.interpolation)
        orbits, _ = class_orbits(digits, group, CLASSES, args.seeds_per_class, args.seed)  # [C, S, N, H, W]
        points = orbits.reshape(-1, *orbits.shape[3:]).to(args.device)  # [C*S*N, H, W], orbit-major
        gram = infinite_kernel(points, arch="mlp", depth=args.depth, chunk=2048)
        predictions = pair_predictions(gram, n, len(CLASSES), args.seeds_per_class, args.chunk)
        accuracy[n] = spectral.one_vs_many_accuracy(predictions)  # [C]
        for label in CLASSES:
            row = {"n_angles": n, "leave_out_class": label, "spectral_accuracy": float(accuracy[n][label])}
            for model in trained:
                if label in args.leave_out_classes:
                    data = training_datamodule(n, label, args.seeds_per_class, args.seed, args.interpolation,
                                               args.source, args.data_dir, args.batch_size)
                    result = fit_out_test_accuracy(model, data, args.steps, args.seed, args.device)
                    trained[model].setdefault(n, []).append(result["out_test"])
                    row |= {f"{model}_out_test_acc": result["out_test"], f"{model}_train_acc": result["train"]}
                    progress.update()
            rows.append(row)
        mean = float(accuracy[n].mean())
        folder.writer.add_scalar("multiclass/spectral_accuracy", mean, n)
        line = f"multiclass n_angles={n:3d}: spectral accuracy {mean:.3f} (per class " + " ".join(
            f"{a:.2f}" for a in accuracy[n].tolist()) + ")"
        for model, by_n in trained.items():
            folder.writer.add_scalar(f"multiclass/{model}_out_test_accuracy", float(np.mean(by_n[n])), n)
            line += f"; {model} trained out-test {np.mean(by_n[n]):.3f}"
        progress.write(line)
    progress.close()
    folder.write_csv("results.csv", rows)

    figure, ax = plt.subplots(figsize=(6, 4.5))
    table = np.array([accuracy[n].numpy() for n in args.n_angles])  # [len(n), C]
    for label in CLASSES:
        ax.plot(args.n_angles, table[:, label], color="0.8", lw=0.8)
    ax.plot(args.n_angles, table.mean(1), "o-", color="C0", lw=2, label="spectral (MLP NTK), mean over classes")
    networks = {**args.network, **{f"{m} (same data)": {n: float(np.mean(v)) for n, v in by_n.items()}
                                   for m, by_n in trained.items()}}
    for k, (model, by_n) in enumerate(networks.items()):
        ax.plot(list(by_n), list(by_n.values()), "s--", color=f"C{k + 1}", label=f"{model} (trained, out-test)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.n_angles, [str(n) for n in args.n_angles])
    ax.set(xlabel="n_angles", ylabel="out-test accuracy", ylim=(-0.02, 1.02),
           title=f"Ten classes one-vs-many, S={args.seeds_per_class} seeds per class")
    ax.legend(fontsize=8)
    figure.tight_layout()
    folder.save_figure(figure)
    chosen = args.leave_out_classes
    return {"experiment": "multiclass", "seeds_per_class": args.seeds_per_class, "interpolation": args.interpolation,
            "ridge": ridge_note(0.0, exact=False),
            "spectral_accuracy": {f"n{n}": float(accuracy[n].mean()) for n in args.n_angles},
            "spectral_accuracy_trained_classes": {f"n{n}": float(accuracy[n][chosen].mean()) for n in args.n_angles},
            "trained_out_test_accuracy": {m: {f"n{n}": float(np.mean(v)) for n, v in by_n.items()}
                                          for m, by_n in trained.items()},
            "training": {"models": list(trained), "steps": args.steps, "batch_size": args.batch_size,
                         "leave_out_classes": chosen} if trained else None,
            "network_out_test_accuracy": {m: {f"n{n}": a for n, a in by_n.items()} for m, by_n in args.network.items()}}
