"""The fit summary's result in words: did the network learn the task, did it transfer to the held-out pose,
and what did the kernels predict.

A newcomer reads three accuracies and a kernel table; these lines say what they mean. The threshold for
"learnt the task in distribution" is the ranked track's convergence rule (`min_in_test_acc` in
`sweeps/mnist_cpu.yaml`, docs/SWEEPS.md): a network below it has not learnt even the poses it saw, so its
out-test mixes sample efficiency with symmetry transfer.
"""

from __future__ import annotations

from orbitbench.run.record import KernelPredictions

IN_DISTRIBUTION = 0.95  # the mnist-cpu track's min_in_test_acc
FAR_BELOW = 0.3  # an out-test this far under in-test: the held-out pose is mostly not recognised
CLOSE = 0.05  # this close: recognised about as well as the seen poses


def finding_lines(in_test: float | None, out_test: float | None, train: float | None, leave_out: object,
                  digits: str | None, predictions: KernelPredictions | None) -> list[str]:
    """Indented summary lines, `  finding      ...` first; empty when validation never ran."""
    if in_test is None or out_test is None:
        return []
    lines: list[str] = []
    what = f"the upright {leave_out}s" if leave_out is not None else "the held-out pose"
    if in_test >= IN_DISTRIBUTION:
        fit = f", {train - in_test:+.3f} from train" if train is not None else ""
        lines.append(f"learnt the task in distribution: in-test {in_test:.3f} >= {IN_DISTRIBUTION} on new digits "
                     f"in the poses it trained on{fit}.")
    else:
        lines.append(f"has NOT learnt the task in distribution: in-test {in_test:.3f} < {IN_DISTRIBUTION}, so its "
                     "out-test mixes too little training with symmetry transfer (more data or epochs).")
    gap = in_test - out_test
    if gap >= FAR_BELOW:
        verdict = f"far below in-test ({gap:.3f} lower): it has not learnt the symmetry for the pose it never saw."
    elif gap > CLOSE:
        verdict = f"below in-test ({gap:.3f} lower): the symmetry carried over in part."
    else:
        verdict = f"about in-test ({gap:+.3f}): the held-out pose is recognised as well as the seen ones."
    lines.append(f"Held-out pose ({what}, trained on only in their other poses): out-test {out_test:.3f}, {verdict}")
    lines += _kernel_words(predictions)
    if digits == "mnist5k":
        lines.append("Trained on the embedded 5,000-digit subset (toy regime): `make install` online fetches full "
                     "MNIST, which `--data.source auto` then uses.")
    return [f"  {'finding' if i == 0 else '':<13}{line}" for i, line in enumerate(lines)]


def _kernel_words(predictions: KernelPredictions | None) -> list[str]:
    """One sentence on the spectral predictions, next to the network on the same probe digits."""
    if predictions is None:
        return []
    defined = {name: p for name, p in predictions.predictors.items() if p.undefined is None and p.spectral_out_test_acc is not None}
    if not defined:
        return []
    network = predictions.network.get("out_test_acc")
    said = ", ".join(f"{name} {p.spectral_out_test_acc:.3f}" for name, p in defined.items())
    n_seeds = predictions.probe.get("n_seeds", "?")
    agree = [name for name, p in defined.items() if p.kappa is not None and p.kappa >= 0.2]
    per_digit = (f"{', '.join(agree)} also pick{'s' if len(agree) == 1 else ''} out which digits fail (kappa >= 0.2)"
                 if agree else "none picks out which digits fail better than chance (kappa < 0.2)")
    net = f"{network:.3f}" if isinstance(network, float) else "n/a"
    level = [name for name, p in defined.items() if isinstance(network, float) and abs(p.spectral_out_test_acc - network) <= 0.15]
    side = [name for name, p in defined.items() if isinstance(network, float) and (p.spectral_out_test_acc < 0.5) == (network < 0.5)]
    outcome = "fails (below 0.5)" if isinstance(network, float) and network < 0.5 else "succeeds (0.5 or above)"
    direction = (f"{', '.join(side)} {'says' if len(side) == 1 else 'say'} the held-out pose {outcome}, as it does" if side
                 else f"none says the held-out pose {outcome}, as it does")
    matched = (f"{', '.join(level)} also {'matches' if len(level) == 1 else 'match'} the level (within 0.15)" if level
               else "none matches the level (within 0.15)")
    return [f"Kernels (spectral rule, Eq. 7) predict out-test {said} on {n_seeds} probe digits where the network "
            f"scores {net}: {direction}; {matched}; {per_digit}. The table below has the details, its legend says how to read it."]
