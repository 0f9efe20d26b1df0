"""EmpiricalNTKCallback on a tiny real run: what reaches the loggers and the summary, and that its
numbers are orbitbench.theory.spectral, plain linear algebra and textbook statistics applied to empirical
NTKs computed here, outside the callback."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from scipy import stats
from sklearn.metrics import cohen_kappa_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orbitbench.theory import spectral
from orbitbench.run.callbacks.kernel_predictions import EmpiricalNTKCallback, model_twin, undefined_predictors
from orbitbench.datamodules import RotatedMNIST
from orbitbench.errors import OrbitbenchError
from orbitbench.run.module import OrbitClassifier
from orbitbench.theory.ntk import empirical_ntk

OPTIONS = dict(n_seeds=10, probe_digits_per_class=2, train_per_class=20, in_test_per_class=4, regression_points=0)
AT_SCALE = dict(regression_points=4000, regression_curve=[300, 4000], empirical_points=400)
FIELDS = {"spectral_out_test_acc", "spectral_out_test_ci", "regression_out_test_acc", "regression_in_test_acc",
          "kappa", "spearman", "agreement", "chance_agreement", "exact_out_test_acc", "regression_kappa"}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Paper MLP, 4 rotations, 40 digits per class, 3 epochs; measurements at start, epoch 2 and end."""
    torch.manual_seed(0)
    dm = RotatedMNIST(n_angles=4, leave_out_class=5, source="mnist5k", images_per_class=40, batch_size=128)
    model = OrbitClassifier("paper_mlp")
    callback = EmpiricalNTKCallback(every_n_epochs=2, **{**OPTIONS, **AT_SCALE})
    logger = TensorBoardLogger(tmp_path_factory.mktemp("tb"), name="ntk", version=0)
    trainer = L.Trainer(
        max_epochs=3, logger=logger, callbacks=[callback], enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, dm)
    return dm, model, callback, trainer, Path(logger.log_dir)


def test_logs_every_predictor_at_start_every_k_epochs_and_end(trained) -> None:
    dm, model, callback, trainer, log_dir = trained
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    steps = [0, 2 * trainer.num_training_batches, 3 * trainer.num_training_batches]
    names = ["network/out_test_acc", "network/in_test_acc", "spectral_accuracy", "seconds", "trained/kernel_drift",
             "init/linearized/regression_out_test_acc"]  # fmt: skip
    names += [f"{p}/{f}" for p in ("infinite", "init", "trained") for f in ("spectral_out_test_acc", "kappa",
              "regression_out_test_acc", "regression_in_test_acc", "exact_out_test_acc")]  # fmt: skip
    for name in names:
        assert [v.step for v in events.Scalars(f"ntk/{name}")] == steps, name
    assert [v.step for v in events.Images("ntk/predicted_vs_actual")] == steps
    for fixed in ("infinite", "init"):  # these kernels do not train
        assert len({v.value for v in events.Scalars(f"ntk/{fixed}/regression_out_test_acc")}) == 1
    drift = [v.value for v in events.Scalars("ntk/trained/kernel_drift")]
    assert drift[0] == pytest.approx(0.0, abs=1e-12) and drift[2] > drift[1] > 0
    assert [h["when"] for h in callback.history] == ["fit_start", "epoch", "fit_end"]


def test_summary_table_and_record(trained) -> None:
    *_, callback, _, _ = trained
    lines = callback.summary_line().splitlines()
    assert lines[0].startswith("  kernel predictions on 10 leave-out seeds x 1 held-out pose")
    rows = [line.split()[0] for line in lines[3:]]
    assert rows[:3] == ["network", "infinite", "init"] and "trained" in rows and "linearised" in rows
    record = json.loads(callback.kernel_predictions().model_dump_json())
    assert record["probe"]["n_seeds"] == 10 and record["probe"]["probe_digits_per_class"] == 2
    assert set(record["predictors"]) == {"infinite", "init", "trained"}
    for entry in record["predictors"].values():
        assert FIELDS <= set(entry)
    network = record["network"]
    assert f"{network['out_test_acc']:.3f} [{network['out_test_ci'][0]:.2f}, {network['out_test_ci'][1]:.2f}]" in lines[3]
    # The legend under the table: each term a reader meets in it, and why `network` is not the headline.
    legend = {line.split()[0]: line for line in lines if line.startswith("  ") and line[2:3].isalpha()}
    for term in ("kappa", "Spearman", "linearised", "network"):
        assert term in legend, lines
    assert "headline out-test" in legend["network"] + callback.summary_line() and "Cohen" in legend["kappa"]


def _one_vs_many(prediction: dict[tuple[int, int], list[float]], seeds: list[int], others: list[int]) -> list[float]:
    """Per seed: the smallest, over other classes, of the mean prediction against that class's seeds."""
    return [min(float(np.mean(prediction[a, c])) for c in others) for a in seeds]


def test_numbers_equal_independent_computations(trained) -> None:
    dm, model, callback, _, _ = trained
    probe, last = callback.probe, callback.history[-1]
    n, leave_out, labels = dm.n_poses, dm.hparams.leave_out_class, dm.digits.labels
    seeds, others = probe.image_index[: probe.n_seeds].tolist(), probe.image_index[probe.n_seeds :].tolist()
    assert (labels[seeds] == leave_out).all()
    assert sorted(labels[others].tolist()) == sorted([c for c in range(10) if c != leave_out] * 2)

    # (a) the spectral rule from one pair kernel at a time, posed by the DataModule itself
    poses = torch.arange(n)
    spectral_pred, exact_pred = {}, {}
    for a in seeds:
        for b in others:
            images = torch.stack([dm.materialize(torch.full((n,), a), poses),
                                  dm.materialize(torch.full((n,), b), poses)], dim=1).flatten(0, 1)  # fmt: skip
            other = int(labels[b])
            kernel = empirical_ntk(model.net, images, output=(leave_out, other), dtype=torch.float64)
            spectral_pred.setdefault((a, other), []).append(1 - float(spectral.spectral_error(spectral.circularize(kernel), 1e-10)))
            rest = [i for i in range(2 * n) if i != 0]  # leave out only the held-out pose 0 of orbit a
            signs = torch.tensor([1.0, -1.0] * n, dtype=torch.float64)
            k_rr = kernel[rest][:, rest]
            alpha = torch.linalg.solve(k_rr + 1e-10 * k_rr.trace() * torch.eye(2 * n - 1, dtype=torch.float64), signs[rest])
            exact_pred.setdefault((a, other), []).append(float(kernel[0, rest] @ alpha))
    other_classes = [c for c in range(10) if c != leave_out]
    spectral_margin = _one_vs_many(spectral_pred, seeds, other_classes)
    trained_entry = last["predictors"]["trained"]
    assert trained_entry["spectral_out_test_acc"] == pytest.approx(np.mean(np.array(spectral_margin) > 0))
    assert trained_entry["exact_out_test_acc"] == pytest.approx(np.mean(np.array(_one_vs_many(exact_pred, seeds, other_classes)) > 0))

    # the network on the same seeds' held-out poses
    model.eval()
    with torch.no_grad():
        logits = model.net(dm.materialize(torch.tensor(seeds), torch.zeros(len(seeds), dtype=torch.long)))
    network_right = (logits.argmax(1) == leave_out).numpy()
    assert last["network"]["out_test_acc"] == pytest.approx(network_right.mean())
    k = int(network_right.sum())
    low, high = stats.binomtest(k, len(seeds)).proportion_ci(method="wilson")
    assert last["network"]["out_test_ci"] == pytest.approx([low, high], abs=1e-9)

    # agreement statistics against scikit-learn / ranks
    predicted_right = np.array(spectral_margin) > 0
    if len(set(predicted_right)) > 1 or len(set(network_right)) > 1:
        expected_kappa = cohen_kappa_score(predicted_right, network_right)
        assert trained_entry["kappa"] == pytest.approx(0.0 if np.isnan(expected_kappa) else expected_kappa, abs=1e-9)
    others_logits = logits.clone()
    others_logits[:, leave_out] = -np.inf
    network_margin = (logits[:, leave_out] - others_logits.max(1).values).numpy()
    ranks = np.corrcoef(stats.rankdata(spectral_margin), stats.rankdata(network_margin))[0, 1]
    assert trained_entry["spearman"] == pytest.approx(ranks, abs=1e-9)

    # (b) kernel regression on the training split, one-hot targets, the trained kernel over centred logits
    points = probe.regression_images
    kernel = empirical_ntk(model.net, points, output=lambda o: o - o.mean(1, keepdim=True), dtype=torch.float64)
    r = len(probe.train_labels)
    targets = torch.eye(10, dtype=torch.float64)[probe.train_labels]
    k_rr = kernel[:r, :r]
    outputs = kernel[r:, :r] @ torch.linalg.solve(k_rr + 1e-10 * k_rr.trace() * torch.eye(r, dtype=torch.float64), targets)
    truth = torch.cat([torch.full((len(seeds),), leave_out), probe.in_test_labels])
    right = (outputs.argmax(1) == truth).double()
    assert trained_entry["regression_out_test_acc"] == pytest.approx(float(right[: len(seeds)].mean()))
    assert trained_entry["regression_in_test_acc"] == pytest.approx(float(right[len(seeds) :].mean()))


def test_bad_arguments_and_models_without_a_twin() -> None:
    with pytest.raises(OrbitbenchError, match="every_n_epochs=0"):
        EmpiricalNTKCallback(every_n_epochs=0)
    with pytest.raises(OrbitbenchError, match="dtype='float16'"):
        EmpiricalNTKCallback(dtype="float16")
    assert "max-pooling" in model_twin(OrbitClassifier("paper_convnet"))
    assert model_twin(OrbitClassifier("mlp", {"depth": 1, "width": 32})).widths == (32,)


def test_config_file_and_callbacks_flag_add_the_callback(capsys: pytest.CaptureFixture) -> None:
    from orbitbench.run.cli import run_lightning_cli

    config = Path(__file__).resolve().parents[1] / "configs" / "empirical_ntk.yaml"
    assert run_lightning_cli(["fit", "--config", str(config), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "class_path: orbitbench.run.callbacks.EmpiricalNTKCallback" in printed
    assert "n_seeds: 32" in printed and "probe_digits_per_class: 4" in printed and "dtype: float64" in printed
    argv = ["fit", "--trainer.callbacks+=orbitbench.run.callbacks.EmpiricalNTKCallback",
            "--trainer.callbacks.every_n_epochs=3", "--print_config"]  # fmt: skip
    assert run_lightning_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "orbitbench.run.callbacks.EmpiricalNTKCallback" in printed and "every_n_epochs: 3" in printed


def test_resume_from_checkpoint_keeps_the_initial_kernel(trained, tmp_path: Path) -> None:
    dm, model, callback, trainer, _ = trained
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    resumed = EmpiricalNTKCallback(every_n_epochs=2, **OPTIONS)
    logger = TensorBoardLogger(tmp_path, name="resumed", version=0)
    L.Trainer(
        max_epochs=4, logger=logger, callbacks=[resumed], enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
    ).fit(OrbitClassifier("paper_mlp"), dm, ckpt_path=checkpoint)  # fmt: skip
    steps = [h["step"] for h in resumed.history]
    assert steps == [h["step"] for h in callback.history] + [4 * trainer.num_training_batches]
    # the init predictor comes from the initial weights, not from the resumed ones
    own = lambda entry: {k: v for k, v in entry.items() if k.endswith(("_acc", "_ci", "_mean")) and not k.startswith("scale_")}  # noqa: E731  probe numbers
    before, after = callback.history[-1]["predictors"]["init"], resumed.history[-1]["predictors"]["init"]
    assert own(after) == own(before) and own(after["linearized"]) == own(before["linearized"])
    assert resumed.history[-1]["predictors"]["trained"]["kernel_drift"] > 0


def test_predictor_subset_and_spectral_only_measure_what_they_say(trained) -> None:
    """`predictors=[infinite, init]`, `regression=false` (the CPU track's setting for large models):
    the spectral numbers are those of the full measurement on the same probe; nothing else is
    computed, and what is left out says why."""
    dm, _, full, _, _ = trained
    torch.manual_seed(0)
    model = OrbitClassifier("paper_mlp")
    callback = EmpiricalNTKCallback(predictors=["infinite", "init"], regression=False, every_n_epochs=50, **OPTIONS)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False, callbacks=[callback],
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, dm)
    first = callback.history[0]["predictors"]
    assert first["trained"] == {"undefined": "not measured (predictors option without 'trained')"}
    reference = full.history[0]["predictors"]
    for name in ("infinite", "init"):
        assert not any(key.startswith("regression_") for key in first[name]) and "linearized" not in first[name]
        # same probe draw and the same initial weights (seed 0): the same spectral prediction
        assert first[name]["spectral_out_test_acc"] == reference[name]["spectral_out_test_acc"]
        assert first[name]["spectral_error_mean"] == pytest.approx(reference[name]["spectral_error_mean"], rel=1e-9)
    assert "not computed (regression=false)" in callback.summary_line()
    with pytest.raises(OrbitbenchError, match="predictors=\\['final'\\]"):
        EmpiricalNTKCallback(predictors=["final"])
    with pytest.raises(OrbitbenchError, match="predictors=\\[\\]"):
        EmpiricalNTKCallback(predictors=[])


def test_a_method_with_another_objective_gets_only_the_trained_kernel(trained) -> None:
    """`pose_consistency` adds a loss the kernel theory does not model: its `infinite` and `init`
    predictions are reported as undefined, naming the method, and only `trained` is measured."""
    dm, _, _, _, _ = trained
    torch.manual_seed(0)
    model = OrbitClassifier("paper_mlp", method="pose_consistency")
    callback = EmpiricalNTKCallback(every_n_epochs=50, **OPTIONS)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False, callbacks=[callback],
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, dm)
    last = callback.history[-1]["predictors"]
    for name in ("infinite", "init"):
        assert set(last[name]) == {"undefined"} and last[name]["undefined"].startswith("method 'pose_consistency': ")
    assert "undefined" not in last["trained"] and {"spectral_out_test_acc", "kappa"} <= set(last["trained"])
    assert undefined_predictors(OrbitClassifier("paper_mlp")) == {}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backbone", ["tiny_orbit_mlp", "orbitbench_plugin_example.nets:tiny_orbit_mlp"])
def test_the_plug_in_routes_train_with_the_ntk_callback(tmp_path: Path, backbone: str) -> None:
    """CONTRIBUTING's two plug-in routes (entry point, dotted path) through `orbitbench fit` with the
    callback: every predictor measured, the `infinite` one from the twin of the plug-in's own layers."""
    import contextlib
    import io

    from orbitbench.run.cli import run_lightning_cli

    argv = ["fit", "--model.backbone", backbone, "--data.n_angles", "4", "--data.images_per_class", "20",
            "--data.leave_out_class", "3", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.callbacks+=orbitbench.run.callbacks.EmpiricalNTKCallback", "--trainer.callbacks.n_seeds=4",
            "--trainer.callbacks.probe_digits_per_class=2", "--trainer.callbacks.train_per_class=3",
            "--trainer.callbacks.in_test_per_class=2", "--trainer.callbacks.figures=false"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_lightning_cli(argv) == 0
    (record,) = tmp_path.rglob("record.json")
    predictors = json.loads(record.read_text())["predictions"]["predictors"]
    assert set(predictors) == {"infinite", "init", "trained"}
    for name, entry in predictors.items():
        assert "undefined" not in entry and 0.0 <= entry["spectral_out_test_acc"] <= 1.0, (name, entry)


def test_regression_at_scale_at_the_end_of_training(trained) -> None:
    """The exact orbit path at its cap (every digit without an in-test pair, all of their training
    pairs, fewer than 4000 here) equals a direct solve on those pairs with the probe's kernel."""
    from orbitbench.models import model_info
    from orbitbench.run.record import KernelPredictions
    from orbitbench.sweep.results import csv_columns
    from orbitbench.theory.regression import ScaleOptions, draw_scale, materialize
    from orbitbench.theory.twins import twin_kernel

    dm, model, callback, trainer, log_dir = trained
    last = callback.history[-1]
    infinite = last["predictors"]["infinite"]
    whole = torch.ones(len(dm.digits.labels), dtype=torch.bool)
    whole[dm.splits["in_test"][:, 0]] = False  # digits whose orbits hold no in-test pair
    train = dm.splits["train"][whole[dm.splits["train"][:, 0]]]
    assert infinite["regression_m"] == len(train) < len(dm.splits["train"]) and infinite["scale_path"] == "orbit"
    sample = draw_scale(dm, ScaleOptions(points=4000, curve=(300, 4000)))
    twin = model_info("paper_mlp").kernel_twin()
    x = materialize(dm, train)
    k = twin_kernel(twin, x)
    y = torch.nn.functional.one_hot(dm.digits.labels[train[:, 0]], 10).double()
    outputs = twin_kernel(twin, sample.test_images, x) @ torch.linalg.solve(k + 1e-10 * k.trace() * torch.eye(len(k)), y)
    u = len(sample.out_pairs)
    right = outputs.argmax(1) == sample.labels
    assert infinite["scale_out_test_acc"] == pytest.approx(float(right[:u].double().mean()))
    assert infinite["scale_in_test_acc"] == pytest.approx(float(right[u:].double().mean()))
    with torch.no_grad():
        net_right = model.net.eval()(sample.test_images).argmax(1) == sample.labels
    assert last["network"]["scale"]["out_test_acc"] == pytest.approx(float(net_right[:u].double().mean()))
    for name in ("init", "trained"):
        entry = last["predictors"][name]
        assert entry["scale_path"] == "direct" and entry["regression_m"] == 400 < len(train)
        assert [c["m"] for c in entry["regression_curve"]] == [300, 400] and entry["scale_spread"]["m"] == 300
        low, high = entry["scale_kappa_ci"]
        assert low <= entry["scale_kappa"] <= high
    typed = callback.kernel_predictions().predictors["infinite"]
    assert typed.regression_curve[-1].m == typed.regression_m and typed.scale_spread.m == typed.regression_curve[0].m
    assert "kernel regression at scale" in callback.summary_line()
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert events.Scalars("ntk/infinite/scale_out_test_acc")[-1].value == pytest.approx(infinite["scale_out_test_acc"])
    assert len(events.Images("ntk/at_scale")) == 1
    columns = csv_columns()
    assert columns.index("pred_infinite_scale_out_test") > columns.index("pred_trained_out_test")


def test_an_impossible_regression_at_scale_is_a_line_in_the_record_not_a_lost_fit(tmp_path: Path) -> None:
    """regression_exact=require where poses are interpolated (n_angles 8): the fit ends normally and
    the record says why there is no at-scale number."""
    torch.manual_seed(0)
    dm = RotatedMNIST(n_angles=8, leave_out_class=5, source="mnist5k", images_per_class=12, batch_size=64)
    callback = EmpiricalNTKCallback(predictors=["infinite"], figures=False, regression_exact="require",
                                    **{**OPTIONS, "regression_points": 100})  # fmt: skip
    L.Trainer(max_epochs=1, limit_train_batches=1, logger=False, callbacks=[callback], enable_progress_bar=False,
              enable_checkpointing=False, enable_model_summary=False, limit_val_batches=1,
              num_sanity_val_steps=0).fit(OrbitClassifier("paper_mlp"), dm)  # fmt: skip
    why = callback.history[-1]["network"]["scale"]["undefined"]
    assert "exact=require, but the kernel is not invariant" in why and "\n" not in why
    assert "kernel regression at scale: not measured (" in callback.summary_line()
    with pytest.raises(OrbitbenchError, match="regression exact='maybe'"):
        EmpiricalNTKCallback(regression_exact="maybe")
