"""Kernel predictors on real short trainings (embedded digits, the default probe of 32 leave-out
seeds and 4 seeds per other class): an architecture invariant to the group is predicted to
succeed, the paper MLP to fail, as the networks do; the statistics of a constant predictor read
as no information; `predict-kernel` on a checkpoint prints the table the fit printed."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from scipy import stats

from orbitbench.theory.agreement import agreement, wilson_interval
from orbitbench.run.callbacks import EmpiricalNTKCallback
from orbitbench.datamodules import RotatedMNIST
from orbitbench.models import create_model
from orbitbench.run.module import OrbitClassifier
from orbitbench.theory.ntk import empirical_ntk
from orbitbench.theory.probe import empirical_gram

ROOT = Path(__file__).resolve().parents[1]


def short_fit(backbone: str, n_angles: int, epochs: int, leave_out: int = 5, **options) -> EmpiricalNTKCallback:
    torch.manual_seed(0)
    dm = RotatedMNIST(n_angles=n_angles, leave_out_class=leave_out, source="mnist5k", images_per_class=100, batch_size=64)
    callback = EmpiricalNTKCallback(every_n_epochs=epochs, figures=False, **options)
    name, _, kwargs = backbone.partition(" ")
    model = OrbitClassifier(name, eval(kwargs) if kwargs else None)  # noqa: S307 (literal dicts written below)
    L.Trainer(max_epochs=epochs, logger=False, callbacks=[callback], enable_progress_bar=False,
              enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
              limit_val_batches=0).fit(model, dm)  # fmt: skip
    return callback


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_c4_pooled_is_predicted_to_succeed_and_the_paper_mlp_to_fail() -> None:
    # The pooled network's out-test accuracy is its training accuracy on the leave-out class (invariance),
    # so a class it learns within a short fit (0); its kernels cost 16x per entry: fewer regression points.
    pooled = short_fit("c4_pooled(mlp) {'depth': 1, 'width': 256}", 4, 6, leave_out=0, train_per_class=10,
                       in_test_per_class=5)  # fmt: skip
    pooled = pooled.history[-1]
    assert pooled["network"]["out_test_acc"] >= 0.6, pooled["network"]
    for name in ("infinite", "init", "trained"):  # its own kernels, invariant like the network
        entry = pooled["predictors"][name]
        assert entry["spectral_out_test_acc"] >= 0.9, (name, entry)
        assert entry["regression_out_test_acc"] >= 0.5, (name, entry)

    mlp = short_fit("paper_mlp", 8, 3).history[-1]  # the default probe
    assert mlp["network"]["out_test_acc"] <= 0.4, mlp["network"]
    for name in ("infinite", "init"):  # the predictions made before training
        entry = mlp["predictors"][name]
        assert entry["spectral_out_test_acc"] <= 0.2, (name, entry)
        assert entry["spectral_out_test_ci"][1] < 0.5, (name, entry)


def test_pooled_kernel_is_the_pooled_networks_own(mnist5k) -> None:
    torch.manual_seed(0)
    network = create_model("c4_pooled(mlp)", depth=1, width=32).double()
    x = (mnist5k.images[:6].double() / 255).unsqueeze(1)
    for output in ((5, 3), "centred"):
        expected = empirical_ntk(network, x, output=output, method="jacobian")
        assert torch.allclose(empirical_gram(network)(x, output), expected, rtol=1e-10, atol=1e-10)
        assert torch.allclose(empirical_gram(network)(x[:2], output, x[2:]), expected[:2, 2:], rtol=1e-10, atol=1e-10)


def test_statistics_of_constant_and_informative_predictors() -> None:
    rng = np.random.default_rng(0)
    network = torch.tensor(rng.random(40) < 0.3)  # the network right on 30% of samples
    margin = torch.tensor(rng.normal(size=40)) + 2.0 * network
    constant = agreement(torch.ones(40, dtype=torch.bool), network, torch.ones(40), margin)
    assert constant.kappa == 0.0 and np.isnan(constant.spearman)  # no information, whatever the agreement
    assert constant.agreement == pytest.approx(float(network.double().mean()))
    never = agreement(torch.zeros(40, dtype=torch.bool), torch.zeros(40, dtype=torch.bool), -torch.ones(40), -margin.abs())
    assert never.agreement == 1.0 and never.kappa == 0.0  # both constant: full agreement, no information
    noisy = network ^ torch.tensor(rng.random(40) < 0.1)
    predicted_margin = margin + torch.tensor(rng.normal(size=40))
    score = agreement(noisy, network, predicted_margin, margin)
    p, q = noisy.double().mean().item(), network.double().mean().item()
    observed = (noisy == network).double().mean().item()
    chance = p * q + (1 - p) * (1 - q)
    assert score.chance_agreement == pytest.approx(chance)
    assert score.kappa == pytest.approx((observed - chance) / (1 - chance)) and score.kappa > 0.5
    ranks = lambda t: stats.rankdata(t.numpy())  # noqa: E731  (Spearman = Pearson of ranks)
    assert score.spearman == pytest.approx(np.corrcoef(ranks(predicted_margin), ranks(margin))[0, 1])
    for k, n in ((0, 32), (5, 32), (32, 32), (17, 40)):
        low, high = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k / n, n) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_predict_kernel_prints_the_fits_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from orbitbench.cli import main

    options = ["n_seeds=10", "probe_digits_per_class=2", "train_per_class=20", "in_test_per_class=4"]
    argv = ["fit", "--config", str(ROOT / "models/paper_mlp.yaml"), "--data.n_angles", "4", "--data.source", "mnist5k",
            "--data.images_per_class", "40", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.callbacks+=orbitbench.run.callbacks.EmpiricalNTKCallback",
            *[f"--trainer.callbacks.{o}" for o in options]]  # fmt: skip
    assert main(argv) == 0
    fit_out = capsys.readouterr().out
    checkpoint = next(tmp_path.glob("*/version_0/checkpoints/last.ckpt"))
    assert main(["predict-kernel", "--ckpt_path", str(checkpoint), *[f"--probe.{o}" for o in options]]) == 0
    table = capsys.readouterr().out.strip("\n")
    assert "network" in table and "infinite" in table and table in fit_out
    # the regression at scale from the checkpoint: the fit's own block (the callback's default sizes),
    # but for the seconds each row took
    scale = ["--at_scale", "true", "--scale.points", "2000", "--scale.curve", "[500, 2000]", "--scale.time_budget_s", "0"]
    assert main(["predict-kernel", "--ckpt_path", str(checkpoint), *[f"--probe.{o}" for o in options], *scale]) == 0
    def rows(text: str) -> list[str]:
        """The at-scale block's predictor rows without their last column (seconds)."""
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if "kernel regression at scale" in line)
        found = [line for line in lines[start + 2 : start + 6] if line.split()[0] in ("network", "infinite", "init")]
        return [line.rsplit(None, 1)[0] if not line.split()[0] == "network" else line for line in found]

    again = capsys.readouterr().out
    assert len(rows(again)) >= 2 and rows(again) == rows(fit_out)
    assert "kernel regression at scale" in again and table in again
    assert main(["predict-kernel", "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 2
    assert capsys.readouterr().err.startswith("orbitbench: --ckpt_path")
