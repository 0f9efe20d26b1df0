"""EmpiricalNTKCallback on a tiny real run: what reaches TensorBoard, and that its numbers are
orbitbench.spectral applied to empirical NTKs computed here, outside the callback."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orbitbench import spectral
from orbitbench.callbacks import EmpiricalNTKCallback, mlp_depth
from orbitbench.datamodules import RotatedMNIST
from orbitbench.errors import OrbitbenchError
from orbitbench.models import create_model
from orbitbench.module import OrbitClassifier
from orbitbench.ntk import empirical_ntk

SCALARS = {
    "spectral_error_mean", "exact_error_mean", "spectral_exact_correlation", "circulant_defect",
    "spectral_accuracy", "network_accuracy", "agreement", "pair_spectral_accuracy",
    "pair_network_accuracy", "pair_agreement", "kernel_alignment_init", "kernel_drift", "seconds",
    "infinite_spectral_error_mean", "infinite_exact_error_mean", "infinite_spectral_accuracy", "infinite_agreement",
}  # fmt: skip
FIGURES = {"kernel", "inverse_spectrum", "spectral_vs_exact"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Paper MLP, 4 rotations, 20 digits per class, 3 epochs; measurements at start, epoch 2 and end."""
    torch.manual_seed(0)
    dm = RotatedMNIST(n_angles=4, leave_out_class=5, source="mnist5k", seeds_per_class=20, batch_size=128)
    model = OrbitClassifier("paper_mlp")
    callback = EmpiricalNTKCallback(every_n_epochs=2, n_seeds=3, seeds_per_class=2)
    logger = TensorBoardLogger(tmp_path_factory.mktemp("tb"), name="ntk", version=0)
    trainer = L.Trainer(
        max_epochs=3, logger=logger, callbacks=[callback], enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, dm)
    return dm, model, callback, trainer, Path(logger.log_dir)


def test_logs_all_scalars_and_figures_at_start_every_k_epochs_and_end(trained) -> None:
    dm, model, callback, trainer, log_dir = trained
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    steps_per_epoch = trainer.num_training_batches
    expected_steps = [0, 2 * steps_per_epoch, 3 * steps_per_epoch]
    for name in SCALARS:
        values = events.Scalars(f"ntk/{name}")
        assert [v.step for v in values] == expected_steps, name
    for name in FIGURES:
        assert [v.step for v in events.Images(f"ntk/{name}")] == expected_steps, name
    alignment = [v.value for v in events.Scalars("ntk/kernel_alignment_init")]
    drift = [v.value for v in events.Scalars("ntk/kernel_drift")]
    assert alignment[0] == pytest.approx(1.0) and drift[0] == pytest.approx(0.0, abs=1e-12)
    assert drift[-1] > drift[1] > 0 and alignment[-1] < 1.0  # training moves the finite-width kernel
    infinite = [v.value for v in events.Scalars("ntk/infinite_spectral_error_mean")]
    assert len(set(infinite)) == 1  # the analytic kernel does not train
    assert [h["final"] for h in callback.history] == [0.0, 0.0, 1.0]
    assert all(h["seconds"] > 0 for h in callback.history)
    last = callback.summary()
    line = callback.summary_line()
    assert f"spectral-predicted {last['spectral_accuracy']:.3f} | network {last['network_accuracy']:.3f}" in line
    assert f"(kernel at init: {callback.history[0]['spectral_accuracy']:.3f})" in line


def test_numbers_equal_spectral_module_on_kernels_computed_outside(trained) -> None:
    dm, model, callback, trainer, _ = trained
    probe = callback.probe
    last = callback.history[-1]
    n, leave_out = dm.n_poses, dm.hparams.leave_out_class
    labels = dm.digits.labels
    seeds = probe.image_index[: probe.n_seeds]
    assert (labels[seeds] == leave_out).all()
    others = probe.image_index[probe.n_seeds :]
    assert sorted(labels[others].tolist()) == sorted([c for c in range(10) if c != leave_out] * 2)

    poses = torch.arange(n)
    spectral_errors, exact_errors, predictions = [], [], {}
    for a in seeds.tolist():
        for b in others.tolist():
            # the interleaved pair x_2k = g^k a, x_2k+1 = g^k b, posed by the DataModule itself
            images = torch.stack([dm.materialize(torch.full((n,), a), poses),
                                  dm.materialize(torch.full((n,), b), poses)], dim=1).flatten(0, 1)  # fmt: skip
            other_class = int(labels[b])
            kernel = empirical_ntk(model.net, images, output=(leave_out, other_class), dtype=torch.float64)
            err = spectral.spectral_error(spectral.circularize(kernel), reg=1e-10)
            spectral_errors.append(err)
            exact_errors.append(spectral.symmetrized_error(kernel, reg=1e-10))
            predictions.setdefault((a, other_class), []).append(1 - err)
    assert last["spectral_error_mean"] == pytest.approx(float(torch.stack(spectral_errors).mean()), rel=1e-9)
    assert last["exact_error_mean"] == pytest.approx(float(torch.stack(exact_errors).mean()), rel=1e-6)
    # one-vs-many: a seed is predicted right iff its mean prediction beats 0 against every other class
    spectral_right = {a: all(torch.stack(predictions[a, c]).mean() > 0 for c in range(10) if c != leave_out)
                      for a in seeds.tolist()}  # fmt: skip
    assert last["spectral_accuracy"] == pytest.approx(sum(spectral_right.values()) / len(seeds))
    model.eval()
    with torch.no_grad():
        upright = dm.materialize(seeds, torch.zeros_like(seeds))  # held-out pose 0 of each leave-out seed
        network_right = (model.net(upright).argmax(1) == leave_out).tolist()
    assert last["network_accuracy"] == pytest.approx(sum(network_right) / len(seeds))
    agree = [spectral_right[a] == r for a, r in zip(seeds.tolist(), network_right)]
    assert last["agreement"] == pytest.approx(sum(agree) / len(seeds))


def test_infinite_width_only_for_relu_mlps_and_bad_arguments() -> None:
    assert mlp_depth(create_model("paper_mlp")) == 2
    assert mlp_depth(create_model("mlp", depth=5)) == 5
    assert mlp_depth(create_model("paper_convnet")) is None
    with pytest.raises(OrbitbenchError, match="every_n_epochs=0"):
        EmpiricalNTKCallback(every_n_epochs=0)
    with pytest.raises(OrbitbenchError, match="dtype='float16'"):
        EmpiricalNTKCallback(dtype="float16")


def test_config_file_and_callbacks_flag_add_the_callback(capsys: pytest.CaptureFixture) -> None:
    from orbitbench.training_cli import run_lightning_cli

    config = Path(__file__).resolve().parents[1] / "configs" / "empirical_ntk.yaml"
    assert run_lightning_cli(["fit", "--config", str(config), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "class_path: orbitbench.callbacks.EmpiricalNTKCallback" in printed
    assert "every_n_epochs: 5" in printed and "dtype: float64" in printed
    argv = ["fit", "--trainer.callbacks+=orbitbench.callbacks.EmpiricalNTKCallback",
            "--trainer.callbacks.every_n_epochs=3", "--print_config"]  # fmt: skip
    assert run_lightning_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "orbitbench.callbacks.EmpiricalNTKCallback" in printed and "every_n_epochs: 3" in printed


def test_resume_from_checkpoint_keeps_the_initial_kernel(trained, tmp_path: Path) -> None:
    dm, model, callback, trainer, _ = trained
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    resumed = EmpiricalNTKCallback(every_n_epochs=2, n_seeds=3, seeds_per_class=2, infinite_width=False)
    logger = TensorBoardLogger(tmp_path, name="resumed", version=0)
    L.Trainer(
        max_epochs=4, logger=logger, callbacks=[resumed], enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
    ).fit(OrbitClassifier("paper_mlp"), dm, ckpt_path=checkpoint)  # fmt: skip
    steps = [h["step"] for h in resumed.history]
    assert steps == [h["step"] for h in callback.history] + [4.0 * trainer.num_training_batches]
    # the drift is still measured from the kernel at initialisation, not from the resumed weights
    assert resumed.history[-1]["kernel_drift"] > callback.history[-1]["kernel_drift"] > 0
