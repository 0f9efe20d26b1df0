"""Empirical NTK speed: orbitbench.theory.ntk vs neural-tangents' three implementations, same weights.

One run, side by side, on the paper's MLP and ConvNet (docs/THEORY.md section 1) with a scalar output
per input (logit 3 minus logit 1, the two-orbit label of a class pair): the torch weights are
ported to plain JAX functions (no stax/flax) and fed to `neural_tangents.empirical_ntk_fn` with
JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS and STRUCTURED_DERIVATIVES (each jitted, compiled before
timing). Also timed: our generic torch.func path (`method="jacobian"`), SimpleViT (no JAX port:
ours vs generic), and one EmpiricalNTKCallback measurement per predictor against a training epoch
timed in the same run.
Every kernel is checked against ours before it is timed.

    .venv/bin/python benchmarks/bench_ntk.py [--n 128] [--repeats 10] [--dtype float32|float64] [--threads 1]
        [--models mlp,cnn,vit] [--skip-callback] [--callback-repeats 3]

Prints a markdown table; the headline is the "ours / nt-structured" ratio on the MLP.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import orbitbench  # noqa: F401  (sets JAX x64 / quiet TF before neural-tangents is imported)
from orbitbench.theory.ntk import empirical_ntk

from _timing import round_robin  # benchmarks/ is on sys.path when a script here runs

PAIR = (3, 1)


def paper_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 128), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(128, 10, bias=False), nn.LogSoftmax(-1),
    )  # fmt: skip


def paper_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(24, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10), nn.LogSoftmax(-1),
    )  # fmt: skip


def jax_port(model: nn.Module) -> tuple[Callable, dict]:
    """The same Sequential as a pure JAX function f(params, x [B,1,28,28]) -> [B, 1], and its params."""
    import jax
    import jax.numpy as jnp

    params = {n.replace(".", "_"): jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters()}
    layers = list(model)

    def f(p: dict, x):
        h = x
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Flatten):
                h = h.reshape(h.shape[0], -1)
            elif isinstance(layer, nn.Linear):
                h = h @ p[f"{i}_weight"].T + (p[f"{i}_bias"] if layer.bias is not None else 0.0)
            elif isinstance(layer, nn.Conv2d):
                h = jax.lax.conv_general_dilated(h, p[f"{i}_weight"], (1, 1), "VALID",
                                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
                h = h + p[f"{i}_bias"][None, :, None, None]
            elif isinstance(layer, nn.MaxPool2d):
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            elif isinstance(layer, nn.ReLU):
                h = jax.nn.relu(h)
            elif isinstance(layer, nn.LogSoftmax):
                h = jax.nn.log_softmax(h, axis=-1)
            elif not isinstance(layer, nn.Dropout):  # dropout: identity in eval mode
                raise TypeError(f"no JAX port for {layer}")
        return (h[:, PAIR[0]] - h[:, PAIR[1]])[:, None]

    return f, params


def round_robin_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds per function, after one untimed warm-up / compile call each."""
    return {name: seconds * 1e3 for name, seconds in round_robin(fns, repeats, warmup=True).items()}


def bench_model(name: str, model: nn.Module, x: torch.Tensor, repeats: int, with_nt: bool) -> list[tuple]:
    """(model, implementation, median ms, relative difference to our kernel) rows."""
    ours = empirical_ntk(model, x, output=PAIR)
    fns: dict[str, Callable[[], object]] = {
        "orbitbench structured (ours)": lambda: empirical_ntk(model, x, output=PAIR),
        "orbitbench generic torch.func (vmap+jacrev)": lambda: empirical_ntk(model, x, output=PAIR, method="jacobian"),
    }
    errs = {name: rel_err(fn(), ours) for name, fn in fns.items()}
    if with_nt:
        import jax

        from orbitbench.theory.reference import neural_tangents

        nt = neural_tangents()

        f, params = jax_port(model)
        xj = jax.numpy.asarray(x.numpy())
        for impl in ("STRUCTURED_DERIVATIVES", "NTK_VECTOR_PRODUCTS", "JACOBIAN_CONTRACTION"):
            ntk_fn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0,
                                                 implementation=getattr(nt.NtkImplementation, impl)))
            key = f"neural-tangents {impl.lower()} (jit)"
            fns[key] = lambda ntk_fn=ntk_fn: ntk_fn(xj, None, params).block_until_ready()
            errs[key] = rel_err(torch.tensor(np.asarray(fns[key]())), ours)
    ms = round_robin_ms(fns, repeats)
    return [(name, impl, ms[impl], errs[impl]) for impl in fns]


def bench_predictors(backbone: str, n_angles: int, repeats: int) -> dict[str, float]:
    """Seconds of each part of one EmpiricalNTKCallback measurement (default probe, no figures) and,
    as the baseline measured in the same run, of one training epoch of the same network on the
    same data (the `make run` DataModule: mnist5k, batch 512, the paper's Adam)."""
    from orbitbench.run.callbacks.kernel_predictions import model_twin
    from orbitbench.datamodules import RotatedMNIST
    from orbitbench.run.module import OrbitClassifier, paper_adam
    from orbitbench.theory.predictions import KernelPredictors
    from orbitbench.theory.probe import draw_probe

    dm = RotatedMNIST(n_angles=n_angles, source="mnist5k")
    dm.setup("fit")
    module = OrbitClassifier(backbone)
    network = module.net
    optimizer = paper_adam(network.parameters())

    def train_epoch() -> None:
        network.train()
        for batch in dm.train_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(network(batch.image), batch.label).backward()
            optimizer.step()

    timings: dict[str, list[float]] = {k: [] for k in ("probe", "infinite", "init", "trained", "epoch")}
    for _ in range(repeats):
        start = time.perf_counter()
        probe = draw_probe(dm)
        timings["probe"].append(time.perf_counter() - start)
        predictors = KernelPredictors(probe, model_twin(module))
        predictors.set_initial(network)
        report = predictors.report(network)
        for name in ("infinite", "init", "trained"):
            timings[name].append(report.predictors[name].get("seconds", float("nan")))
        start = time.perf_counter()
        train_epoch()
        timings["epoch"].append(time.perf_counter() - start)
    out = {k: float(np.median(v)) for k, v in timings.items()}
    out["points"] = len(probe.train_labels) + probe.n_seeds + len(probe.in_test_labels)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="kernel size n x n")
    parser.add_argument("--repeats", type=int, default=10, help="timed turns per implementation")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--models", default="mlp,cnn,vit", help="comma list of mlp, cnn, vit ('' for none)")
    parser.add_argument("--skip-callback", action="store_true")
    parser.add_argument("--callback-repeats", type=int, default=3, help="measurements (and epochs) per model")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch and XLA alike (1: steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.threads == 1:  # must be set before JAX starts its CPU backend
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    x = torch.rand(args.n, 1, 28, 28, dtype=dtype)
    x = x / x.flatten(1).norm(dim=1)[:, None, None, None]  # unit-norm images, as the datamodules feed them
    models = {m for m in args.models.split(",") if m}
    rows = []
    if "mlp" in models:
        rows += bench_model("paper MLP 784-512-128-10", paper_mlp().to(dtype), x, args.repeats, True)
    if "cnn" in models:
        rows += bench_model("paper ConvNet", paper_convnet().to(dtype), x, args.repeats, True)
    if "vit" in models:
        from vit_pytorch import SimpleViT

        vit = SimpleViT(image_size=28, patch_size=4, num_classes=10, dim=256, depth=2, heads=4, mlp_dim=256, channels=1)
        rows += bench_model("SimpleViT (paper)", vit.to(dtype), x, max(3, args.repeats // 4), False)

    if rows:
        print_kernel_table(rows, args)
    if not args.skip_callback:
        print(f"\nEmpiricalNTKCallback, one measurement per predictor (default probe: 32 leave-out seeds, 4 per "
              f"other class, float64, no figures) vs one training epoch in the same run; median of "
              f"{args.callback_repeats}; load avg {os.getloadavg()[0]:.2f}\n")  # fmt: skip
        print("| backbone | n_angles | regression points | probe s | infinite s | init s | trained s | epoch s "
              "| trained / epoch |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for backbone, n_angles in (("paper_mlp", 8), ("paper_mlp", 32), ("paper_convnet", 8)):
            t = bench_predictors(backbone, n_angles, args.callback_repeats)
            print(f"| {backbone} | {n_angles} | {t['points']} | {t['probe']:.2f} | {t['infinite']:.2f} | "
                  f"{t['init']:.2f} | {t['trained']:.2f} | {t['epoch']:.2f} | {t['trained'] / t['epoch']:.2f} |")


def print_kernel_table(rows: list[tuple], args: argparse.Namespace) -> None:
    print(f"\n{args.n}x{args.n} kernel, {args.dtype}, scalar output (logit {PAIR[0]} - logit {PAIR[1]}); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load avg {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    print("| model | implementation | median ms | x ours | rel. diff to ours |")
    print("|---|---|---:|---:|---:|")
    base: dict[str, float] = {}
    for model, impl, ms, err in rows:
        base.setdefault(model, ms)
        print(f"| {model} | {impl} | {ms:.2f} | {ms / base[model]:.2f} | {err:.1e} |")
    for model in base:
        nt_ms = [ms for m, impl, ms, _ in rows if m == model and "structured_derivatives" in impl]
        if nt_ms:
            print(f"\n{model}: ours / neural-tangents structured = {base[model] / nt_ms[0]:.2f}")

if __name__ == "__main__":
    main()
