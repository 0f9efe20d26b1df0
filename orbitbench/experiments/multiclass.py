"""`orbitbench theory multiclass`: paper Fig. 6B, ten-class one-vs-many spectral accuracy.

S seed digits per class, their rotation orbits and one MLP NTK Gram matrix over all of them (by
default the authors' kernel, `authors_kernel`). An orbit of leave-out class A is predicted right
iff, for every other class B, the spectral prediction `1 - Eq. 7` averaged over B's S orbits is
positive (docs/THEORY.md §5). Beside it, one-vs-rest kernel regression on the same Gram matrix
(`one_vs_rest_predictions`, the authors' absolute ridge). With `train`, zoo networks are trained on
exactly these points (`theory.networks`) under a named protocol (docs/THEORY.md §8), pose 0 of
class A held out, and their out-test accuracy is plotted against both kernel curves.
"""

from __future__ import annotations

import csv
import dataclasses
import time
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from orbitbench.theory import spectral
from orbitbench.errors import OrbitbenchError
from orbitbench.theory.kernels import infinite_kernel
from orbitbench.orbits import make_group
from orbitbench.theory.pairs import class_orbits
from orbitbench.experiments._run import DigitData, RunFolder, documents_data_arguments, execute, ridge_note
from orbitbench.theory.twins import relu_expectations

CLASSES = list(range(10))
REGRESSION_RIDGE = 1e-10  # absolute, on the diagonal of the observed block (the authors' one-vs-rest solve)
# The authors' Fig. 6B kernel (their stax network: Dense(512), Relu, Dense(128), Relu, Dense(10, no bias),
# Relu, Dense(1); W_std = b_std = 1, NTK parameterisation): whether each Dense layer has a bias.
AUTHORS_BIASES = (True, True, False, True)


@documents_data_arguments
def multiclass(
    n_angles: Sequence[int] = (2, 4, 8, 16),
    seeds_per_class: int = 4,
    depth: int | None = None,
    compare: Path | None = None,
    chunk: int = 1024,
    train: bool = False,
    protocol: str = "orbitbench",
    models: Sequence[str] = ("paper_mlp",),
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    leave_out_classes: Sequence[int] | None = None,
    data: DigitData = DigitData(),
    device: str = "cpu",
    out: Path | None = None,
) -> Path:
    """Fig. 6B: ten-class one-vs-many spectral and regression accuracy against n_angles, and trained networks.

    Args:
        n_angles: rotation orbit sizes (paper 2..64).
        seeds_per_class: seed digits per class S (paper 13); prefix-stable in S.
        depth: hidden layers of a plain MLP NTK ([Dense(512, b_std=1), Relu] x depth, Dense(1));
            default: the authors' kernel (three hidden ReLU layers, the third bias-free).
        compare: results.csv of an `orbitbench sweep` on RotatedMNIST: its out-test accuracy alongside.
        chunk: orbit pairs per batch (memory ~ chunk * (2N)^2 * 8 bytes).
        train: train `models` on exactly the kernel side's points (see `theory.networks`).
        protocol: how they train (docs/THEORY.md §8): orbitbench (standard parameterisation, 1,000
            steps, batch 64, the same seed digits at every n_angles) or authors (paper_mlp in NTK
            parameterisation, 2,000 epochs, batch 512, seed digits redrawn for each n_angles).
        models: zoo models to train (`orbitbench.models.list_models()`).
        steps: optimiser steps of each network (overrides the protocol's; excludes epochs).
        epochs: training epochs of each network (overrides the protocol's; excludes steps).
        batch_size: training batch size (overrides the protocol's).
        leave_out_classes: classes to train a network for (default all ten).
    """
    from orbitbench.experiments.networks import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise OrbitbenchError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if steps is not None and epochs is not None:
        raise OrbitbenchError(f"steps={steps} and epochs={epochs}: give one training budget, not both")
    chosen = PROTOCOLS[protocol]
    budget = {"steps": steps, "epochs": None} if steps is not None else {"steps": None, "epochs": epochs} if epochs else {}
    training = dataclasses.replace(chosen, **budget, batch_size=batch_size or chosen.batch_size)
    classes = list(CLASSES if leave_out_classes is None else leave_out_classes)
    if any(c not in CLASSES for c in classes):
        raise OrbitbenchError(f"leave_out_classes={classes}: expected digit classes 0-9")
    if train and not models:
        raise OrbitbenchError("--train needs at least one model in --models")
    network = read_network_accuracy(Path(compare)) if compare is not None else {}
    return execute("multiclass", run, dict(locals(), n_angles=list(n_angles), models=list(models),
                                           leave_out_classes=classes, network=network, training=training))


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


def authors_kernel(x: torch.Tensor) -> torch.Tensor:
    """NTK Gram matrix [B, B] (float64) of the authors' Fig. 6B kernel on images x [B, ...].

    The arc-cosine recursion of docs/THEORY.md §4 (NTK parameterisation, W_std = b_std = 1), with a
    bias in each Dense layer as `AUTHORS_BIASES` says: `Sigma_1 = x.x' / d + 1`, then per ReLU layer
    `Sigma <- E(Sigma) + bias`, `Theta <- Sigma + E'(Sigma) Theta`.
    """
    flat = x.to(torch.float64).reshape(x.shape[0], -1)  # [B, D]
    bias = [float(b) for b in AUTHORS_BIASES]
    cov = flat @ flat.T / flat.shape[1] + bias[0]  # [B, B]
    ntk = cov.clone()
    for b in bias[1:]:
        diagonal = cov.diagonal()
        e, e_prime = relu_expectations(cov, diagonal[:, None], diagonal[None, :])
        cov = e + b
        ntk = cov + e_prime * ntk
    return 0.5 * (ntk + ntk.T)


def one_vs_rest_predictions(gram: torch.Tensor, n_poses: int, n_classes: int, per_class: int,
                            ridge: float = REGRESSION_RIDGE) -> torch.Tensor:
    """Fig. 6B's regression side from an orbit-major Gram matrix [C*S*N, C*S*N] -> predictions [C, S].

    For each class A: labels +1 on A's points and -1 on every other class's, pose 0 of all S orbits
    of A hidden, `y_hat = K[T, O] (K[O, O] + ridge I)^{-1} y_O` with an absolute ridge; orbit s of
    A is classified right iff `y_hat[A, s] > 0` (the accuracy: `(predictions > 0).mean(-1)`).
    """
    m = n_classes * per_class * n_poses
    classes = torch.arange(m, device=gram.device) // (per_class * n_poses)  # [M] class of each point
    pose = torch.arange(m, device=gram.device) % n_poses
    out = torch.zeros(n_classes, per_class, dtype=gram.dtype)
    for label in range(n_classes):
        hidden = (classes == label) & (pose == 0)  # [M]
        observed = ~hidden
        y = torch.where(classes[observed] == label, 1.0, -1.0).to(gram.dtype)  # [M - S]
        system = gram[observed][:, observed] + ridge * torch.eye(int(observed.sum()), dtype=gram.dtype, device=gram.device)
        out[label] = (gram[hidden][:, observed] @ torch.linalg.solve(system, y)).cpu()  # [S]
    return out


def run(args: types.SimpleNamespace, folder: RunFolder) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from orbitbench.data import load_digits
    from orbitbench.experiments.networks import fit_out_test_accuracy, training_datamodule  # Lightning: only with --train

    digits = load_digits(args.source, args.data_dir)
    protocol = args.training
    rows, accuracy, regression = [], {}, {}
    trained = {model: {} for model in args.models} if args.train else {}
    seconds = {"kernel": 0.0, **{model: 0.0 for model in trained}}
    fits = [(n, label, model) for n in args.n_angles for label in args.leave_out_classes for model in trained]
    progress = tqdm(total=len(fits), desc="multiclass networks", unit="fit", disable=not fits)
    for n in args.n_angles:
        start, seed = time.perf_counter(), protocol.seed_for(args.seed, n)
        group = make_group("rotation", n, interpolation=args.interpolation)
        orbits, _ = class_orbits(digits, group, CLASSES, args.seeds_per_class, seed)  # [C, S, N, H, W]
        points = orbits.reshape(-1, *orbits.shape[3:]).to(args.device)  # [C*S*N, H, W], orbit-major
        if args.depth is None:
            gram = authors_kernel(points)
        else:
            gram = infinite_kernel(points, arch="mlp", depth=args.depth, chunk=2048)
        predictions = pair_predictions(gram.cpu(), n, len(CLASSES), args.seeds_per_class, args.chunk)
        accuracy[n] = spectral.one_vs_many_accuracy(predictions)  # [C]
        regression[n] = (one_vs_rest_predictions(gram, n, len(CLASSES), args.seeds_per_class) > 0).double().mean(-1)  # [C]
        seconds["kernel"] += time.perf_counter() - start
        for label in CLASSES:
            row = {"n_angles": n, "leave_out_class": label, "seed": seed, "spectral_accuracy": float(accuracy[n][label]),
                   "regression_accuracy": float(regression[n][label])}
            for model in trained:
                if label in args.leave_out_classes:
                    start = time.perf_counter()
                    data = training_datamodule(n, label, args.seeds_per_class, seed, args.interpolation,
                                               args.source, args.data_dir, protocol.batch_size)
                    result = fit_out_test_accuracy(model, data, protocol, seed, args.device)
                    seconds[model] += time.perf_counter() - start
                    trained[model].setdefault(n, []).append(result["out_test"])
                    row |= {f"{model}_out_test_acc": result["out_test"], f"{model}_train_acc": result["train"]}
                    progress.update()
            rows.append(row)
        mean, mean_regression = float(accuracy[n].mean()), float(regression[n].mean())
        folder.writer.add_scalar("multiclass/spectral_accuracy", mean, n)
        folder.writer.add_scalar("multiclass/regression_accuracy", mean_regression, n)
        line = f"multiclass n_angles={n:3d}: spectral accuracy {mean:.3f} (per class " + " ".join(
            f"{a:.2f}" for a in accuracy[n].tolist()) + f"); regression accuracy {mean_regression:.3f}"
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
    kernel_name = "authors' NTK" if args.depth is None else f"MLP NTK, depth {args.depth}"
    ax.plot(args.n_angles, table.mean(1), "o-", color="C0", lw=2, label=f"spectral ({kernel_name}), mean over classes")
    ax.plot(args.n_angles, [float(regression[n].mean()) for n in args.n_angles], "^-", color="C9", lw=2,
            label=f"kernel regression, one-vs-rest (ridge {REGRESSION_RIDGE:g})")
    networks = {**args.network, **{f"{m} ({args.protocol} protocol)": {n: float(np.mean(v)) for n, v in by_n.items()}
                                   for m, by_n in trained.items()}}
    for k, (model, by_n) in enumerate(networks.items()):
        ax.plot(list(by_n), list(by_n.values()), "s--", color=f"C{k + 1}", label=f"{model} (trained, out-test)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.n_angles, [str(n) for n in args.n_angles])
    ax.set(xlabel="n_angles", ylabel="out-test accuracy", ylim=(-0.02, 1.02),
           title=f"Ten classes, S={args.seeds_per_class} seeds per class")
    ax.legend(fontsize=8)
    figure.tight_layout()
    folder.save_figure(figure)
    chosen = args.leave_out_classes
    return {"experiment": "multiclass", "seeds_per_class": args.seeds_per_class, "interpolation": args.interpolation,
            "kernel": "authors" if args.depth is None else f"mlp depth {args.depth}",
            "seeds": {f"n{n}": protocol.seed_for(args.seed, n) for n in args.n_angles},
            "ridge": ridge_note(0.0, exact=False) | {
                "regression": f"{REGRESSION_RIDGE:g} * I (absolute) on the diagonal of the observed block"},
            "spectral_accuracy": {f"n{n}": float(accuracy[n].mean()) for n in args.n_angles},
            "spectral_accuracy_trained_classes": {f"n{n}": float(accuracy[n][chosen].mean()) for n in args.n_angles},
            "regression_accuracy": {f"n{n}": float(regression[n].mean()) for n in args.n_angles},
            "regression_accuracy_trained_classes": {f"n{n}": float(regression[n][chosen].mean()) for n in args.n_angles},
            "seconds": seconds,
            "trained_out_test_accuracy": {m: {f"n{n}": float(np.mean(v)) for n, v in by_n.items()}
                                          for m, by_n in trained.items()},
            "training": {"protocol": args.protocol, "models": list(trained), **dataclasses.asdict(protocol),
                         "leave_out_classes": chosen} if trained else None,
            "network_out_test_accuracy": {m: {f"n{n}": a for n, a in by_n.items()} for m, by_n in args.network.items()}}
