"""Training methods on the embedded digits: `supervised` is bit for bit the pre-method training,
the pose-pair methods never see an out-test pose, every method trains through `orbitbench fit`.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from orbitbench.errors import OrbitbenchError
from orbitbench.methods import FeatureTap, create_method, list_methods
from orbitbench.run.module import OrbitClassifier
from orbitbench.run.cli import run_lightning_cli

LEAVE_OUT = 3
TINY = [
    "--data.n_angles", "4", "--data.images_per_class", "50", "--data.batch_size", "64",
    "--data.leave_out_class", str(LEAVE_OUT), "--trainer.max_epochs", "2",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.num_sanity_val_steps", "0",
]


class LegacyClassifier(OrbitClassifier):
    """The training step exactly as it was before methods existed (the parent commit's code)."""

    def training_step(self, batch, batch_idx: int):
        logits = self.net(batch.image)
        loss = F.cross_entropy(logits, batch.label)
        self.train_acc(logits, batch.label)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss


class RecordLossInputs(L.Callback):
    """Every (image, pose) that enters a training step: the batch's own pairs and every image the
    method makes on top (a wrapped `materialize`), kept on the class so an in-process CLI run can
    be inspected after it ends."""

    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    extra: list[tuple[torch.Tensor, torch.Tensor]] = []
    datamodule = None

    def on_train_start(self, trainer, pl_module) -> None:
        cls = type(self)
        cls.batches, cls.extra, cls.datamodule = [], [], trainer.datamodule
        self.in_step = False
        original = trainer.datamodule.materialize

        def recording(image_index, pose):
            if self.in_step:
                cls.extra.append((image_index.cpu(), pose.cpu()))
            return original(image_index, pose)

        trainer.datamodule.materialize = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        type(self).batches.append((batch.image_index.cpu(), batch.pose.cpu()))
        self.in_step = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.in_step = False


def fit(save_dir: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_lightning_cli(["fit", *TINY, "--trainer.logger.init_args.save_dir", str(save_dir), *extra])
    return status, out.getvalue()


def run_dir(save_dir: Path) -> Path:
    (found,) = save_dir.glob("*/version_*")
    return found


def record(save_dir: Path) -> dict:
    return json.loads((run_dir(save_dir) / "record.json").read_text())


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_lists_every_method_and_refuses_unknown_names() -> None:
    assert {"supervised", "pose_consistency", "latent_operator"} <= set(list_methods())
    with pytest.raises(OrbitbenchError, match="did you mean 'pose_consistency'"):
        create_method("pose_consistensy")
    with pytest.raises(OrbitbenchError, match="method 'pose_consistency'.*unexpected keyword"):
        create_method("pose_consistency", wieght=1.0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_supervised_is_bit_for_bit_the_training_before_methods(tmp_path) -> None:
    legacy, new = tmp_path / "legacy", tmp_path / "new"
    assert fit(legacy, "--model.class_path", "test_methods.LegacyClassifier")[0] == 0
    status, stdout = fit(new, "--model.method", "supervised")
    assert status == 0
    old_record, new_record = record(legacy), record(new)
    assert new_record["model"]["method"] == "supervised" and old_record["metrics"] == new_record["metrics"]
    old_weights = torch.load(run_dir(legacy) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    new_weights = torch.load(run_dir(new) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert old_weights.keys() == new_weights.keys()
    assert all(torch.equal(old_weights[k], new_weights[k]) for k in old_weights)
    assert run_dir(new).parent.name == "paper_mlp-RotatedMNIST-n4-c3"  # supervised runs keep their names


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", ["pose_consistency", "latent_operator"])
def test_pose_pair_methods_train_only_on_training_pairs(method: str, tmp_path) -> None:
    status, stdout = fit(tmp_path, "--model.method", method, "--trainer.callbacks+=test_methods.RecordLossInputs")
    assert status == 0, stdout
    assert f"paper_mlp+{method} on RotatedMNIST" in stdout  # the entrant id (orbitbench.entrants)
    dm = RecordLossInputs.datamodule
    batch_image, batch_pose = map(torch.cat, zip(*RecordLossInputs.batches))
    extra_image, extra_pose = map(torch.cat, zip(*RecordLossInputs.extra))
    # Every step made one partner image per batch image, of the same image in (mostly) another pose.
    assert torch.equal(extra_image, batch_image)
    assert (extra_pose != batch_pose).float().mean() > 0.9
    image = torch.cat([batch_image, extra_image])
    pose = torch.cat([batch_pose, extra_pose])
    # Out-test, computed here from its definition: the upright pose of the leave-out class.
    labels = dm.digits.labels
    assert not ((labels[image] == LEAVE_OUT) & (pose == 0)).any()
    assert (labels[image] == LEAVE_OUT).any()  # the class itself was trained on, in other poses
    # No in-test pair either: every pair seen is a training pair.
    key = image * dm.n_poses + pose
    train = dm.splits["train"]
    assert torch.isin(key, train[:, 0] * dm.n_poses + train[:, 1]).all()
    in_test = dm.splits["in_test"]
    assert not torch.isin(key, in_test[:, 0] * dm.n_poses + in_test[:, 1]).any()
    saved = record(tmp_path)
    assert saved["model"]["method"] == method and saved["metrics"]["in_test_acc"] > 0.1


def test_partner_poses_are_other_training_poses_of_the_same_image() -> None:
    from orbitbench.datamodules import RotatedMNIST

    dm = RotatedMNIST(n_angles=8, source="mnist5k", images_per_class=20, leave_out_class=LEAVE_OUT, held_out_poses=[0, 1])
    dm.setup("fit")
    train = dm.splits["train"]
    torch.manual_seed(0)
    partner = dm.partner_poses(train[:, 0], train[:, 1])
    pairs = {(int(i), int(p)) for i, p in train}
    assert all((int(i), int(p)) in pairs for i, p in zip(train[:, 0], partner))
    assert (partner != train[:, 1]).all()  # with 8 poses every image has another training pose
    upright_left_out = dm.digits.labels[train[:, 0]] == LEAVE_OUT
    assert not torch.isin(partner[upright_left_out], torch.tensor([0, 1])).any()
    # Uniform over the other training poses: every pose of class 0 appears as a partner.
    assert set(partner[dm.digits.labels[train[:, 0]] == 0].tolist()) == set(range(8))
    with pytest.raises(OrbitbenchError, match="not in the training split"):
        dm.partner_poses(dm.splits["out_test"][:, 0], dm.splits["out_test"][:, 1])


@pytest.mark.parametrize("backbone", ["paper_mlp", "paper_convnet", "c4_pooled(paper_mlp)", "steerable_cnn"])
def test_feature_tap_reads_the_input_of_the_read_out(backbone: str) -> None:
    from orbitbench.data import load_digits
    from orbitbench.models import model_info

    torch.manual_seed(0)
    info = model_info(backbone)
    net = info.build().eval()
    images = load_digits("mnist5k").images[:5].float().unsqueeze(1) / 255  # [5, 1, 28, 28]
    readout = info.readout(net)  # the declared classifier: the last nn.Linear of every zoo model here
    assert readout is [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    tap = FeatureTap(net, readout)
    logits, features = tap(images)
    assert torch.equal(logits, net(images))  # the same forward pass as the network's own
    assert features.shape == (5, readout.in_features)
    if backbone != "c4_pooled(paper_mlp)":  # c4_pooled averages log-probabilities, not read-outs
        scores = readout(features)
        assert torch.allclose(logits, scores.log_softmax(1) if backbone.startswith("paper") else scores, atol=1e-6)


def test_latent_operator_network_maps_images_to_logits_and_reads_moduli() -> None:
    torch.manual_seed(0)
    model = OrbitClassifier(method="latent_operator", method_kwargs={"planes": 8})
    images = torch.rand(3, 1, 28, 28)
    code = model.net.encode(images)  # [3, 8, 2]
    assert code.shape == (3, 8, 2) and model.net(images).shape == (3, 10)
    # Rotating every plane of the code leaves the logits unchanged: the classifier reads moduli.
    from orbitbench.methods.latent_operator import rotate_planes

    turned = rotate_planes(code, torch.rand(3, 8) * 6.28)
    assert torch.allclose(model.net.classify(turned), model.net.classify(code), atol=1e-5)
    # The backbone's own read-out is gone: no parameter of the 128 -> 10 layer is left.
    assert all(p.shape != (10, 128) for p in model.net.parameters())


def test_the_sweep_grid_has_a_method_axis_beside_the_models() -> None:
    from orbitbench import sweep
    from orbitbench.sweep.spec import check_runnable
    from sweep_helpers import TINY

    with_methods = "  model: [paper_mlp]\n  method: [supervised, pose_consistency]\n"
    spec = sweep.parse_sweep_text(TINY.replace("  model: [paper_mlp]\n", with_methods), "m")
    cells = spec.cells()
    # supervised cells keep the ids of sweeps made before methods; others name their method.
    assert [c.cell_id for c in cells] == [
        "paper_mlp-n2-c3-s0", "paper_mlp-n4-c3-s0",
        "paper_mlp+pose_consistency-n2-c3-s0", "paper_mlp+pose_consistency-n4-c3-s0",
    ]
    assert "--model.method=pose_consistency" in sweep.fit_argv(spec, cells[2], Path("/x"))
    assert "--model.method=supervised" in sweep.fit_argv(spec, cells[0], Path("/x"))
    assert sweep.parse_sweep_text(TINY, "old").grid.method == ["supervised"]  # the default axis
    with pytest.raises(OrbitbenchError, match="unknown method 'pose'"):
        check_runnable(sweep.parse_sweep_text(TINY.replace("  model: [paper_mlp]\n", "  model: [paper_mlp]\n  method: [pose]\n"), "m"))
    with pytest.raises(OrbitbenchError, match="fit.model.method is set by the grid"):
        sweep.parse_sweep_text(TINY + "  model.method: supervised\n", "m")


def test_an_unknown_method_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    status, _ = fit(tmp_path / "runs", "--model.method", "pose_consistensy")
    err = capsys.readouterr().err
    assert status == 2 and "did you mean 'pose_consistency'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("backbone", "method"),
    [("paper_mlp", "supervised"), ("paper_mlp", "pose_consistency"), ("paper_mlp", "latent_operator"),
     ("steerable_cnn", "supervised")],
)
def test_every_methods_network_has_an_empirical_ntk(backbone: str, method: str) -> None:
    """`net` maps images to logits and survives torch.func (what the empirical-NTK callback runs)."""
    from orbitbench.theory.ntk import empirical_ntk

    torch.manual_seed(0)
    net = OrbitClassifier(backbone=backbone, method=method).net.eval()
    images = torch.rand(4, 1, 28, 28)
    kernel = empirical_ntk(net, images, output=(3, 5))
    assert kernel.shape == (4, 4) and torch.isfinite(kernel).all()
    assert torch.allclose(kernel, kernel.T, rtol=1e-4, atol=1e-4)
    assert torch.linalg.eigvalsh(kernel.double()).min() > -1e-3 * kernel.diagonal().abs().max()


def test_a_method_is_handed_net_batch_and_views_and_needs_no_trainer() -> None:
    """`training_step(net, batch, views)`: the pose pairs come from `PoseViews` of the DataModule,
    no Trainer or LightningModule is involved."""
    from orbitbench.datamodules import RotatedMNIST
    from orbitbench.methods import PoseViews, build_network

    dm = RotatedMNIST(n_angles=4, images_per_class=10, leave_out_class=LEAVE_OUT, batch_size=16)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    torch.manual_seed(0)
    for name in ("supervised", "pose_consistency", "latent_operator"):
        method = create_method(name)
        net = build_network(method, "paper_mlp")
        loss, logits, _ = method.training_step(net, batch, PoseViews(dm))
        assert torch.isfinite(loss) and logits.shape == (16, 10)
    with pytest.raises(OrbitbenchError, match="needs a DataModule with pose pairs"):
        create_method("pose_consistency").training_step(net, batch, None)
