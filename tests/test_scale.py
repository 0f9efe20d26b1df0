"""Kernel regression at the network's scale (orbitbench.theory.regression, orbit_solve, scale_kernels):
every number is checked against an independent computation (the probe's `twin_kernel`, a direct
`torch.linalg.solve`, `empirical_ntk`, neural-tangents)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from orbitbench.datamodules import RotatedMNIST
from orbitbench.errors import OrbitbenchError
from orbitbench.models import KernelTwin, create_model, model_info
from orbitbench.theory.agreement import agreement, kappa_interval
from orbitbench.theory.at_scale import empirical_kernels, measure_at_scale, twin_kernels
from orbitbench.theory.ntk import empirical_ntk
from orbitbench.theory.orbit_solve import check_exact, orbit_digits, orbit_regression, orbits_for_points
from orbitbench.theory.regression import ScaleOptions, draw_scale, materialize, regress, ridge_solve_
from orbitbench.theory.scale_kernels import EmpiricalFactors, twin_gram
from orbitbench.theory.twins import twin_kernel

PAPER_TWIN = KernelTwin(widths=(512, 128), readout_bias=False)


@pytest.fixture(scope="module")
def digits(mnist5k) -> torch.Tensor:
    x = mnist5k.images[::97][:40].double() / 255  # 40 real digits
    x[7] = x[3]  # a bitwise duplicate: cos = 1 exactly off the diagonal too
    return (x / x.flatten(1).norm(dim=1)[:, None, None]).unsqueeze(1)  # [40, 1, 28, 28]


def _datamodule(n_angles: int, **kwargs) -> RotatedMNIST:
    dm = RotatedMNIST(n_angles=n_angles, leave_out_class=5, source="mnist5k", **kwargs)
    dm.setup("fit")
    return dm


def _direct(twin: KernelTwin, dm, pairs: torch.Tensor, test: torch.Tensor, reg: float = 1e-10) -> torch.Tensor:
    """The regression on `pairs`, solved directly (the probe's kernel, torch.linalg.solve)."""
    x = materialize(dm, pairs)
    k = twin_kernel(twin, x)
    y = torch.nn.functional.one_hot(dm.digits.labels[pairs[:, 0]], 10).double()
    return twin_kernel(twin, test, x) @ torch.linalg.solve(k + reg * k.trace() * torch.eye(len(k), dtype=k.dtype), y)


@pytest.mark.parametrize("twin", [PAPER_TWIN, KernelTwin(widths=(512, 128), readout_bias=False, parameterization="ntk"),
                                  KernelTwin(widths=(64, 32), parameterization="ntk", raw_std=(0.5, 1.5, 2.0)),
                                  KernelTwin(widths=(64,), b_std=None), KernelTwin(widths=(64,), pool="rot90")])  # fmt: skip
def test_the_in_place_gram_is_the_twin_kernel(digits: torch.Tensor, twin: KernelTwin) -> None:
    expected = twin_kernel(twin, digits)
    assert torch.allclose(twin_gram(twin, digits, elements=300), expected, rtol=1e-12, atol=0)  # many small blocks
    assert torch.allclose(twin_gram(twin, digits[:15], digits[10:]), expected[:15, 10:], rtol=1e-12, atol=0)
    assert torch.equal(twin_gram(twin, digits), twin_gram(twin, digits).T)


def test_the_in_place_gram_is_neural_tangents_kernel(digits: torch.Tensor, neural_tangents) -> None:
    stax = neural_tangents
    w = 3**-0.5
    _, _, kernel_fn = stax.serial(stax.Dense(512, W_std=w, b_std=math.sqrt(1 / (3 * 784)), parameterization="standard"),
                                  stax.Relu(), stax.Dense(128, W_std=w, b_std=math.sqrt(1 / (3 * 512)),
                                                          parameterization="standard"),
                                  stax.Relu(), stax.Dense(1, W_std=w, b_std=None, parameterization="standard"))  # fmt: skip
    expected = torch.from_numpy(np.array(kernel_fn(digits.reshape(40, -1).numpy(), None, "ntk"), dtype=np.float64))
    assert torch.allclose(twin_gram(PAPER_TWIN, digits), expected, rtol=1e-8, atol=0)


def test_the_in_place_solve_overwrites_the_kernel_and_equals_a_direct_solve(digits: torch.Tensor) -> None:
    k = twin_kernel(PAPER_TWIN, digits[:30])
    rhs = torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.linalg.solve(k + 1e-6 * k.trace() * torch.eye(30, dtype=k.dtype), rhs)
    work = k.clone()
    pointer = work.data_ptr()
    solved = ridge_solve_(work, rhs, 1e-6)
    lower = torch.tril(work.T)  # the factor L, written over K's upper triangle as L^T
    assert work.data_ptr() == pointer and torch.allclose(lower @ lower.T, k + 1e-6 * k.trace() * torch.eye(30, dtype=k.dtype))
    assert torch.allclose(solved, expected, rtol=1e-9, atol=0)
    with pytest.raises(OrbitbenchError, match="not positive definite"):
        ridge_solve_(-k.clone(), rhs, 0.0)


def test_the_empirical_factors_give_the_class_averaged_centred_ntk(digits: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = create_model("paper_mlp")
    expected = empirical_ntk(net, digits[:12], digits[5:], output="centred", dtype=torch.float64) / 10
    left, right = EmpiricalFactors(net, digits[:12]), EmpiricalFactors(net, digits[5:])
    assert torch.allclose(left.gram(right, elements=40), expected, rtol=1e-10, atol=1e-12)
    full = empirical_ntk(net, digits[:12], output="centred", dtype=torch.float64) / 10
    assert torch.allclose(left.gram(elements=40), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["linearized(paper_mlp)", "c4_pooled(paper_mlp)"])
def test_wrapped_networks_are_factored_through_their_kernel_view(digits: torch.Tensor, name: str) -> None:
    """A linearised network (its backbone at w0, after its weights moved) and a C4-pooled one (16
    pairs of turns of its backbone) give the empirical NTK of the network itself, computed directly
    (`empirical_ntk` on the wrapper: the generic per-parameter path, affordable on a few digits)."""
    torch.manual_seed(0)
    net = create_model(name).double()
    with torch.no_grad():  # trained weights: the linearisation's kernel must not move with them
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a, b = digits[:6], digits[4:9]
    expected = empirical_ntk(net, a, b, output="centred", dtype=torch.float64) / 10
    factors = EmpiricalFactors(net, a)
    # every layer on the per-layer path (outer-product factors), none as per-sample Jacobians: at
    # scale those would hold every parameter once per class and point
    assert all(f.parts.outer and not f.parts.gram for f in factors.turns)
    assert len(factors.turns) == (4 if name.startswith("c4_pooled") else 1)
    got = factors.gram(EmpiricalFactors(net, b), elements=12)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert torch.allclose(EmpiricalFactors(net, a).gram(elements=12),
                          empirical_ntk(net, a, output="centred", dtype=torch.float64) / 10, rtol=1e-9, atol=1e-12)


def test_the_empirical_kernels_make_the_scored_points_factors_once_and_only_for_them(digits: torch.Tensor) -> None:
    """The scored points' factors are reused across calls (timing probes, curve, second draw), and
    a different set of scored points gets its own: each call equals the explicit empirical NTK."""
    torch.manual_seed(0)
    net = create_model("paper_mlp")
    kernels, _ = empirical_kernels(net)
    ntk = lambda a, b=None: empirical_ntk(net, a, b, output="centred", dtype=torch.float64) / 10  # noqa: E731
    scored = digits[10:]
    for train, test in ((digits[:8], scored), (digits[:12], scored), (digits[:8], digits[3:9])):
        k, k_test = kernels(train, test)
        assert torch.allclose(k, ntk(train), rtol=1e-10, atol=1e-12)
        assert torch.allclose(k_test, ntk(test, train), rtol=1e-10, atol=1e-12)


def test_a_sample_of_the_whole_training_split_is_the_full_regression() -> None:
    """Three images per class, 4 poses: m = the whole training split; nested sizes are its first rows."""
    dm = _datamodule(4, images_per_class=3)
    options = ScaleOptions(points=10_000, curve=(40,), in_test_points=50, bootstrap=200)
    sample = draw_scale(dm, options)
    train = dm.splits["train"]
    assert sample.n_train == len(train) and torch.equal(sample.train_pairs(40), sample.train_pairs(len(train))[:40])
    kernels, _ = twin_kernels(PAPER_TWIN)
    outputs = regress(kernels, sample, [40, len(train)], options.reg)
    test = sample.test_images
    full = _direct(PAPER_TWIN, dm, train, test)  # every training pair, in split order
    assert torch.allclose(outputs[len(train)], full, rtol=1e-8, atol=1e-10)
    assert torch.equal(outputs[len(train)].argmax(1), full.argmax(1))
    assert torch.allclose(outputs[40], _direct(PAPER_TWIN, dm, sample.train_pairs(40), test), rtol=1e-8, atol=1e-10)

    torch.manual_seed(0)
    net = create_model("paper_mlp")
    found = measure_at_scale(dm, net, PAPER_TWIN, ["infinite"], ScaleOptions(points=10_000, curve=(40,), exact="off",
                                                                              in_test_points=50, bootstrap=200))  # fmt: skip
    entry = found["predictors"]["infinite"]
    u = len(sample.out_pairs)
    right = full[:u].argmax(1) == sample.labels[:u]
    assert entry["regression_m"] == len(train) and entry["scale_path"] == "direct"
    assert entry["scale_out_test_acc"] == pytest.approx(float(right.double().mean()))
    assert entry["scale_in_test_acc"] == pytest.approx(float((full[u:].argmax(1) == sample.labels[u:]).double().mean()))
    assert [c["m"] for c in entry["regression_curve"]] == [40, len(train)]
    assert entry["scale_spread"]["m"] == 40 and len(entry["scale_spread"]["out_test"]) == 2


def test_the_orbit_solve_equals_a_direct_solve_on_the_same_training_pairs() -> None:
    """n_angles 4: poses are pixel permutations, the twin is invariant; the held-out upright poses
    of the leave-out class inside the orbits are removed by the block leave-out formula."""
    dm = _datamodule(4)
    gram = lambda a, b=None: twin_kernel(PAPER_TWIN, a, b)  # noqa: E731  the probe's kernel, not twin_gram
    chosen = orbit_digits(dm, seed=3)
    assert check_exact(gram, dm, chosen) is None
    test = materialize(dm, torch.cat([dm.splits["out_test"][:40], dm.splits["in_test"][:40]]))
    found = orbit_regression(gram, dm, chosen, [30, 90], test, 1e-10)
    train = dm.splits["train"]
    for count in (30, 90):
        pairs = train[torch.isin(train[:, 0], chosen[:count])]
        held = count * 4 - len(pairs)
        assert held == int((dm.digits.labels[chosen[:count]] == 5).sum()) >= 1  # held-out upright poses, removed
        expected = _direct(PAPER_TWIN, dm, pairs, test)
        got = found[len(pairs)]
        assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-10
        assert torch.equal(got.argmax(1), expected.argmax(1))


def test_the_orbit_sample_never_falls_short_of_the_size_asked_for() -> None:
    """m on the orbit path is the training pairs of whole orbits: the fewest leading digits that hold
    at least the size asked for (counted here digit by digit), all of them where they hold fewer."""
    dm = _datamodule(4)
    chosen = orbit_digits(dm, seed=3)
    per_digit = [int((dm.splits["train"][:, 0] == d).sum()) for d in chosen.tolist()]
    assert min(per_digit) >= 3 and max(per_digit) == 4  # upright poses of the leave-out class are held out
    for points in (1, 4, 5, 37, 90, 91, sum(per_digit), sum(per_digit) + 1):
        count = orbits_for_points(dm, chosen, points)
        if points <= sum(per_digit):
            assert sum(per_digit[:count]) >= points > sum(per_digit[: count - 1])
        else:
            assert count == len(chosen)


def test_the_orbit_solve_is_refused_where_poses_are_interpolated() -> None:
    dm = _datamodule(8, images_per_class=3)
    why = check_exact(lambda a, b=None: twin_kernel(PAPER_TWIN, a, b), dm, orbit_digits(dm, 0))
    assert why is not None and "not invariant" in why and "\n" not in why
    torch.manual_seed(0)
    with pytest.raises(OrbitbenchError, match="exact=require, but the kernel is not invariant"):
        measure_at_scale(dm, create_model("paper_mlp"), PAPER_TWIN, ["infinite"], ScaleOptions(exact="require"))


def test_kappa_interval_is_seeded_and_holds_the_kappa() -> None:
    generator = torch.Generator().manual_seed(1)
    net = torch.rand(400, generator=generator) < 0.4
    predicted = torch.where(torch.rand(400, generator=generator) < 0.7, net, ~net)
    kappa = agreement(predicted, net, predicted.double(), net.double()).kappa
    low, high = kappa_interval(predicted, net, 500, seed=4)
    assert (low, high) == kappa_interval(predicted, net, 500, seed=4) and low < kappa < high and high - low < 0.3


@pytest.mark.parametrize("bad, message", [
    (dict(points=0), "points=0"), (dict(curve=(0,)), "curve"), (dict(time_budget_s=-1), "time_budget_s"),
    (dict(exact="yes"), "exact='yes'"), (dict(empirical_points=True), "empirical_points"),
    (dict(empirical_points={"init": 0}), "empirical_points"), (dict(empirical_points={"init": "many"}), "empirical_points"),
])  # fmt: skip
def test_bad_options_are_one_line(bad: dict, message: str) -> None:
    with pytest.raises(OrbitbenchError, match=message):
        ScaleOptions(**bad)


def test_a_pinned_m_per_predictor_and_the_budget_for_the_others() -> None:
    """{predictor: m} fixes that predictor's m (what a verification re-runs with); the others are
    still sized by the time budget, which a budget too small for anything sets to its first probe."""
    dm = _datamodule(4, images_per_class=30)
    torch.manual_seed(0)
    net = create_model("paper_mlp")
    options = ScaleOptions(points=300, curve=(100,), empirical_points={"trained": 120}, time_budget_s=1e-6, exact="off",
                           in_test_points=40, out_test_points=40, bootstrap=50)  # fmt: skip
    found = measure_at_scale(dm, net, PAPER_TWIN, ["infinite", "init", "trained"], options, initial=net)["predictors"]
    assert found["trained"]["regression_m"] == 120 and found["init"]["regression_m"] == 250
    assert found["infinite"]["regression_m"] == 300  # a twin: `points`, whatever is pinned
    same = ScaleOptions(**{**options.__dict__, "empirical_points": 120})
    again = measure_at_scale(dm, net, PAPER_TWIN, ["trained"], same)["predictors"]["trained"]
    assert again["scale_out_test_acc"] == found["trained"]["scale_out_test_acc"] and again["regression_m"] == 120


def test_model_twin_of_paper_mlp_is_the_tested_one() -> None:
    assert model_info("paper_mlp").kernel_twin() == PAPER_TWIN


def _numbers(found: dict) -> dict:
    """A measurement's numbers, without its timings."""
    return {name: {k: v for k, v in entry.items() if "seconds" not in k} for name, entry in found["predictors"].items()}


def test_the_regression_cache_shares_a_kernels_solves_and_is_read_only_where_set(tmp_path, monkeypatch, caplog) -> None:
    """The twin's solves do not depend on the network judged: a second network's measurement reads
    them; another twin, or no cache folder, solves again; an edited file is read (hence verify runs
    without the cache), a truncated one is solved again; an unwritable folder costs only time."""
    from orbitbench.theory.regression_cache import CACHE_ENV, network_identity, without_cache

    dm = _datamodule(8, images_per_class=20)
    options = ScaleOptions(points=200, curve=(100,), in_test_points=40, out_test_points=40, bootstrap=50,
                           exact="off", time_budget_s=0)  # fmt: skip
    torch.manual_seed(0)
    first, second = create_model("paper_mlp"), create_model("paper_mlp")
    fresh = {net: _numbers(measure_at_scale(dm, net, PAPER_TWIN, ["infinite"], options)) for net in (first, second)}
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    assert _numbers(measure_at_scale(dm, first, PAPER_TWIN, ["infinite"], options)) == fresh[first]
    files = sorted(cache.iterdir())
    assert len(files) == 2  # draw 0 at [100, 200]; draw 1 at 100 (the spread)
    stamps = [f.stat().st_mtime_ns for f in files]
    assert _numbers(measure_at_scale(dm, second, PAPER_TWIN, ["infinite"], options)) == fresh[second]
    assert sorted(cache.iterdir()) == files and [f.stat().st_mtime_ns for f in files] == stamps  # read, not solved
    measure_at_scale(dm, first, KernelTwin(widths=(64,)), ["infinite"], options)
    assert len(list(cache.iterdir())) == 4  # another kernel, other solves

    for path in files:  # an edit is read: only a run without the cache can check a number
        outputs = torch.load(path, weights_only=True)
        torch.save({m: torch.zeros_like(t) for m, t in outputs.items()}, path)
    edited = _numbers(measure_at_scale(dm, first, PAPER_TWIN, ["infinite"], options))
    assert edited["infinite"]["scale_in_test_acc"] == 0.0 < fresh[first]["infinite"]["scale_in_test_acc"]
    with without_cache():
        assert _numbers(measure_at_scale(dm, first, PAPER_TWIN, ["infinite"], options)) == fresh[first]
    assert os.environ[CACHE_ENV] == str(cache)
    for path in files:
        path.write_bytes(path.read_bytes()[:100])  # truncated: solved again and replaced
    assert _numbers(measure_at_scale(dm, first, PAPER_TWIN, ["infinite"], options)) == fresh[first]
    for path in files:  # outputs of another shape (another file's, a hand-made one): solved again
        torch.save({m: t[:5] for m, t in torch.load(path, weights_only=True).items()}, path)
    assert _numbers(measure_at_scale(dm, first, PAPER_TWIN, ["infinite"], options)) == fresh[first]
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))
    assert _numbers(measure_at_scale(dm, first, PAPER_TWIN, ["infinite"], options)) == fresh[first]
    assert "the regression is not cached" in caplog.text

    # an empirical kernel is named by the network's weights: equal weights share, others do not
    twin_of_first = create_model("paper_mlp")
    twin_of_first.load_state_dict(first.state_dict())
    assert network_identity(twin_of_first, torch.float64) == network_identity(first, torch.float64)
    assert network_identity(second, torch.float64) != network_identity(first, torch.float64)
    assert network_identity(first, torch.float32) != network_identity(first, torch.float64)
