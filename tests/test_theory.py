"""Interleaved orbit pairs and the `orbitbench theory` experiments, end to end on tiny sizes."""

from __future__ import annotations

import csv
import math
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from orbitbench.theory import kernels, pairs, spectral
from orbitbench.orbits import Rotation, Translation
from orbitbench import cli


def main(argv: list[str]) -> int:
    """`orbitbench theory ...` through the one front end, as a user types it."""
    return cli.main(["theory", *argv])


def read_rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_orbit_pairs_are_interleaved_sphere_normalised_exact_poses(mnist5k) -> None:
    orbit_pairs = pairs.make_orbit_pairs(mnist5k, Rotation(4), 5, seed=124)
    assert orbit_pairs.points.shape == (5, 8, 28, 28) and orbit_pairs.points.dtype == torch.float64
    assert (orbit_pairs.label_a != orbit_pairs.label_b).all()
    torch.testing.assert_close(orbit_pairs.label_a, mnist5k.labels[orbit_pairs.index_a])
    for p in range(5):
        for seed_index, parity in ((orbit_pairs.index_a[p], 0), (orbit_pairs.index_b[p], 1)):
            image = mnist5k.images[seed_index].to(torch.float64)
            for k in range(4):  # quarter turns are exact: compare with rot90 + demean + unit norm here
                posed = torch.rot90(image, k, dims=(0, 1))
                posed = posed - posed.mean()
                torch.testing.assert_close(orbit_pairs.points[p, 2 * k + parity], posed / posed.norm())
    again = pairs.make_orbit_pairs(mnist5k, Rotation(4), 5, seed=124)
    torch.testing.assert_close(again.points, orbit_pairs.points)
    other = pairs.make_orbit_pairs(mnist5k, Rotation(4), 5, seed=7)
    assert not torch.equal(other.index_a, orbit_pairs.index_a)


def test_pair_and_seed_draws_are_prefix_stable(mnist5k) -> None:
    index_a, index_b = pairs.sample_pairs(mnist5k.labels, 64, seed=124)
    assert (mnist5k.labels[index_a] != mnist5k.labels[index_b]).all()
    assert index_a.unique().numel() > 50 and mnist5k.labels[index_b].unique().numel() == 10  # spread, not stuck
    for k in (1, 3, 17, 64):
        first_a, first_b = pairs.sample_pairs(mnist5k.labels, k, seed=124)
        assert torch.equal(first_a, index_a[:k]) and torch.equal(first_b, index_b[:k])
    few = pairs.make_orbit_pairs(mnist5k, Rotation(8, "cubic"), 3, seed=5)
    many = pairs.make_orbit_pairs(mnist5k, Rotation(8, "cubic"), 9, seed=5)
    assert torch.equal(few.points, many.points[:3]) and torch.equal(few.index_b, many.index_b[:3])
    # seed digits per class: S seeds are the first S of a run with more
    orbits_2, index_2 = pairs.class_orbits(mnist5k, Rotation(4), [1, 7, 2], per_class=2, seed=9)
    orbits_5, index_5 = pairs.class_orbits(mnist5k, Rotation(4), [1, 7, 2], per_class=5, seed=9)
    assert torch.equal(index_2, index_5[:, :2]) and torch.equal(orbits_2, orbits_5[:, :2])


def test_class_orbits_pick_the_requested_classes(mnist5k) -> None:
    orbits, index = pairs.class_orbits(mnist5k, Translation(4), [3, 8], per_class=2, seed=0)
    assert orbits.shape == (2, 2, 4, 28, 28)
    assert mnist5k.labels[index[0]].tolist() == [3, 3] and mnist5k.labels[index[1]].tolist() == [8, 8]
    shifted = torch.roll(mnist5k.images[index[1, 0]].to(torch.float64), 7, dims=1)  # pose 1: 7 px right
    shifted = shifted - shifted.mean()
    torch.testing.assert_close(orbits[1, 0, 1], shifted / shifted.norm())


def test_toy_run_folder_and_values(tmp_path: Path, capsys) -> None:
    out = tmp_path / "toy"
    assert main(["toy", "--out", str(out), "--orbit_sizes", "[4,8]", "--distances", "[0.5,1.5]", "--reg", "0"]) == 0
    assert {"results.csv", "figure.png", "summary.json", "inverse_spectra.npz", "tensorboard"} <= {p.name for p in out.iterdir()}
    assert any((out / "tensorboard").iterdir())
    rows = read_rows(out / "results.csv")
    assert len(rows) == 4
    # independent check of one row: two circles, RBF, exact leave-one-out with numpy
    n, d = 8, 1.5
    t = 2 * np.pi * np.arange(n) / n
    x = np.empty((2 * n, 3))
    x[0::2] = np.stack([np.cos(t), np.sin(t), np.full(n, d / 2)], 1)
    x[1::2] = np.stack([np.cos(t + np.pi / n), np.sin(t + np.pi / n), np.full(n, -d / 2)], 1)
    gram = np.exp(-(1.4**2) * ((x[:, None] - x[None]) ** 2).sum(-1))
    y = np.array([(-1.0) ** i for i in range(2 * n)])
    expected = 1 - gram[0, 1:] @ np.linalg.solve(gram[1:, 1:], y[1:])
    row = next(r for r in rows if int(r["n_per_orbit"]) == n and float(r["distance"]) == d)
    assert float(row["spectral_error"]) == pytest.approx(expected, rel=1e-8)
    assert float(row["exact_error"]) == pytest.approx(expected, rel=1e-8)
    assert "max |Eq. 7 - exact|" in capsys.readouterr().out


def test_pairs_run_tracks_exact_error(tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    assert main(["pairs", "--out", str(out), "--n_pairs", "8", "--n_poses", "[4]", "--depths", "[1]"]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 8 and all(r["label_a"] != r["label_b"] for r in rows)
    predicted = np.array([float(r["spectral_error"]) for r in rows])
    exact = np.array([float(r["exact_error"]) for r in rows])
    assert np.abs(predicted - exact).max() < 0.15  # same sample as test_kernels' bound, smaller n
    summary = json.loads((out / "summary.json").read_text())
    assert summary["correlations"]["depth1"]["n4"]["spectral_vs_exact"] > 0.9
    assert (out / "figure.png").stat().st_size > 10_000


def test_cnn_run_gap_exact_on_shifts(tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    assert main(["cnn", "--out", str(out), "--rotations", "[2]", "--shifts", "[2]", "--n_pairs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gap_translation_max_exact_error"] < 1e-6
    assert summary["fc_translation_mean_exact_error"] > 0.1
    assert len(read_rows(out / "results.csv")) == 4  # 2 groups x 2 archs x 1 pair


def test_seeds_and_multiclass_runs(tmp_path: Path, mnist5k) -> None:
    assert main(["seeds", "--out", str(tmp_path / "s"), "--n_angles", "[4]", "--seeds_per_class", "2", "--trials", "2"]) == 0
    rows = read_rows(tmp_path / "s" / "results.csv")
    assert len(rows) == 2 and all(r["class_a"] != r["class_b"] for r in rows)
    assert all(0 < float(r["exact_error"]) < 3 for r in rows)
    assert main(["multiclass", "--out", str(tmp_path / "m"), "--n_angles", "[4]", "--seeds_per_class", "2"]) == 0
    accuracy = [float(r["spectral_accuracy"]) for r in read_rows(tmp_path / "m" / "results.csv")]
    assert len(accuracy) == 10 and all(a in (0.0, 0.5, 1.0) for a in accuracy)


def test_multiclass_plots_sweep_accuracy_alongside(tmp_path: Path) -> None:
    sweep_csv = tmp_path / "sweep.csv"
    sweep_csv.write_text(
        "sweep,model,datamodule,n_poses,leave_out_class,out_test_acc\n"
        "s,paper_mlp,RotatedMNIST,4,0,0.2\ns,paper_mlp,RotatedMNIST,4,1,0.4\n"
        "s,paper_mlp,TranslatedMNIST,4,0,0.9\n"
    )
    out = tmp_path / "m"
    assert main(["multiclass", "--out", str(out), "--n_angles", "[2]", "--seeds_per_class", "1", "--compare", str(sweep_csv)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network_out_test_accuracy"] == {"paper_mlp": {"n4": pytest.approx(0.3)}}
    bad = tmp_path / "bad.csv"
    bad.write_text("model,n_poses\nx,4\n")
    assert main(["multiclass", "--out", str(tmp_path / "b"), "--compare", str(bad)]) == 2
    assert not (tmp_path / "b").exists()


def test_multiclass_pair_predictions_match_directly_built_pairs(mnist5k) -> None:
    from orbitbench.experiments.multiclass import pair_predictions

    orbits, _ = pairs.class_orbits(mnist5k, Rotation(4), [0, 1, 2], per_class=2, seed=3)  # [3, 2, 4, 28, 28]
    gram = kernels.mlp_ntk(orbits.reshape(-1, 28, 28))
    predictions = pair_predictions(gram, 4, 3, 2, chunk=5)
    for (ca, sa, cb, sb) in [(0, 1, 2, 0), (2, 0, 1, 1), (1, 0, 0, 1)]:
        direct = kernels.mlp_ntk(pairs.interleave(orbits[ca, sa][None], orbits[cb, sb][None])[0])
        expected = spectral.spectral_prediction(spectral.circularize(direct))
        assert predictions[ca, sa, cb, sb].item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["pairs", "--n_pairs", "0"], "n_pairs=0: expected a positive integer"),
        (["pairs", "--group", "spin"], "group='spin': expected one of rotation, translation"),
        (["toy", "--orbit_sizes", "[4,x]"], "--orbit_sizes: expected int, got 'x'"),
        (["pairs", "--reg", "-1"], "reg=-1.0: expected a number >= 0"),
        (["toy", "--length", "0"], "--length 0.0"),
        (["fig9"], "unknown command theory 'fig9'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, capsys, argv, message) -> None:
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)] if argv[0] != "fig9" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbitbench: ") and message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_existing_run_folder_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "taken").mkdir()
    assert main(["toy", "--out", str(tmp_path / "taken"), "--orbit_sizes", "[4]"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_pearson_matches_scipy_and_is_nan_for_a_constant() -> None:
    from scipy.stats import pearsonr

    from orbitbench.stats import pearson

    x, y = [0.1, 0.4, 0.35, 0.8, 0.7], [1.0, 2.5, 2.0, 3.9, 4.2]
    assert pearson(x, y) == pytest.approx(pearsonr(x, y).statistic, abs=1e-12)
    assert pearson(torch.tensor(x), torch.tensor(y)) == pytest.approx(pearsonr(x, y).statistic, abs=1e-6)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])) and math.isnan(pearson([1.0], [2.0]))


def test_authors_kernel_equals_their_stax_network(mnist5k, neural_tangents) -> None:
    """The default kernel of `theory multiclass` against the authors' Fig. 6B stax network, built here."""
    from orbitbench.experiments.multiclass import authors_kernel

    stax = neural_tangents
    orbits, _ = pairs.class_orbits(mnist5k, Rotation(4), [2, 7], per_class=1, seed=5)  # [2, 1, 4, 28, 28]
    x = orbits.reshape(-1, 28 * 28)  # [8, 784]
    _, _, kernel_fn = stax.serial(stax.Dense(512, W_std=1.0, b_std=1.0), stax.Relu(), stax.Dense(128, W_std=1.0, b_std=1.0),
                                  stax.Relu(), stax.Dense(10, W_std=1.0, b_std=None), stax.Relu(),
                                  stax.Dense(1, W_std=1.0, b_std=1.0))  # fmt: skip
    expected = torch.from_numpy(np.array(kernel_fn(x.numpy(), None, "ntk"), dtype=np.float64))
    assert torch.allclose(authors_kernel(x), expected, rtol=1e-9, atol=0)


def test_regression_curve_matches_an_independent_solve(mnist5k) -> None:
    """`one_vs_rest_predictions` against numpy's least squares on the same Gram matrix, built by hand here."""
    from orbitbench.experiments.multiclass import one_vs_rest_predictions

    n, per_class = 8, 2
    orbits, _ = pairs.class_orbits(mnist5k, Rotation(n), list(range(10)), per_class, seed=11)  # [10, 2, 4, 28, 28]
    gram = kernels.mlp_ntk(orbits.reshape(-1, 28, 28))  # [160, 160], orbit-major
    got = one_vs_rest_predictions(gram, n, 10, per_class, ridge=1e-10)  # [10, 2]
    k = gram.numpy()
    expected = []
    for label in range(10):
        hidden = [label * per_class * n + s * n for s in range(per_class)]  # pose 0 of each orbit of the class
        observed = [i for i in range(10 * per_class * n) if i not in hidden]
        y = np.array([1.0 if i // (per_class * n) == label else -1.0 for i in observed])
        alpha = np.linalg.lstsq(k[np.ix_(observed, observed)] + 1e-10 * np.eye(len(observed)), y, rcond=None)[0]
        expected.append(k[np.ix_(hidden, observed)] @ alpha)
    assert torch.allclose(got, torch.tensor(np.array(expected)), rtol=1e-6, atol=1e-9)
    assert float(got.max() - got.min()) > 0.5  # predictions that differ from orbit to orbit, not one constant


def test_multiclass_authors_protocol_runs_and_states_itself(tmp_path: Path) -> None:
    out = tmp_path / "a"
    argv = ["multiclass", "--out", str(out), "--n_angles", "[2,4]", "--seeds_per_class", "1", "--train", "true",
            "--protocol", "authors", "--epochs", "2", "--leave_out_classes", "[4]"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    training = summary["training"]
    assert training["protocol"] == "authors" and training["batch_size"] == 512 and training["epochs"] == 2
    assert training["backbone_kwargs"] == {"paper_mlp": {"parameterization": "ntk"}}
    assert summary["kernel"] == "authors" and summary["seeds"] == {"n2": 126, "n4": 128}  # redrawn per n_angles
    rows = read_rows(out / "results.csv")
    assert {r["seed"] for r in rows} == {"126", "128"} and all(r["regression_accuracy"] != "" for r in rows)
    assert summary["regression_accuracy"]["n4"] == pytest.approx(np.mean([float(r["regression_accuracy"]) for r in rows
                                                                          if r["n_angles"] == "4"]))
    assert (out / "figure.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv,message", [
    (["--protocol", "paper"], "protocol='paper': expected one of orbitbench, authors"),
    (["--steps", "3", "--epochs", "2"], "give one training budget, not both"),
])
def test_multiclass_rejects_bad_protocol_options(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["multiclass", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbitbench: ") and message in err
    assert not any(tmp_path.iterdir())


def test_pairs_takes_separate_ridges_and_the_authors_preset(tmp_path: Path, capsys) -> None:
    common = ["--n_pairs", "6", "--n_poses", "[16]", "--depths", "[1]"]
    assert main(["pairs", "--out", str(tmp_path / "o"), *common]) == 0
    assert main(["pairs", "--out", str(tmp_path / "a"), *common, "--ridge", "authors"]) == 0
    assert main(["pairs", "--out", str(tmp_path / "x"), *common, "--ridge", "authors", "--spectral_reg", "1e-10"]) == 0
    ours, theirs, back = (read_rows(tmp_path / name / "results.csv") for name in "oax")
    # the authors' larger spectral ridge raises every spectral error; the exact side is the same ridge
    assert all(float(t["spectral_error"]) > float(o["spectral_error"]) for o, t in zip(ours, theirs))
    assert [r["exact_error"] for r in ours] == [r["exact_error"] for r in theirs]
    assert [r["spectral_error"] for r in ours] == [r["spectral_error"] for r in back]  # per-side override
    ridge = json.loads((tmp_path / "a" / "summary.json").read_text())["ridge"]
    assert ridge["preset"] == "authors" and ridge["spectral"].startswith("1e-05 * trace(K) = n K[0, 0]")
    assert ridge["exact"].startswith("1e-10 * trace(K[O, O])")
    for argv, message in ((["--ridge", "paper"], "ridge='paper': expected one of orbitbench, authors"),
                          (["--exact_scale", "log"], "exact_scale='log': expected relative or absolute"),
                          (["--spectral_reg", "-1"], "spectral_reg=-1.0: expected a number >= 0")):
        capsys.readouterr()
        assert main(["pairs", "--out", str(tmp_path / "bad"), *common, *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("flags", [["--distances", "[]"], ["--distances", "[.nan]"], ["--orbit_sizes", "[]"]], ids=str)
def test_toy_refuses_empty_or_non_finite_axes_in_one_line(tmp_path, capsys, flags) -> None:
    out = tmp_path / "toy"
    assert main(["toy", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbitbench: ") and err.count("\n") == 1 and "expected" in err, err
    assert not out.exists() and not out.with_name("toy.partial").exists()


@pytest.mark.parametrize("field", ["n_seeds", "probe_digits_per_class", "train_per_class", "in_test_per_class"])
def test_an_empty_probe_is_refused(field) -> None:
    from orbitbench.errors import OrbitbenchError
    from orbitbench.theory.probe import ProbeOptions

    with pytest.raises(OrbitbenchError, match=f"probe {field}=0: expected an integer >= 1"):
        ProbeOptions(**{field: 0})
