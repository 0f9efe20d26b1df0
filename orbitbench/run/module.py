"""`OrbitClassifier`: the one LightningModule, a zoo backbone trained by a registered method.

It stays thin on purpose: the architecture comes from the zoo by name, the training loss from
the methods registry by name (`orbitbench.methods`; `supervised` = cross-entropy), the optimiser
and scheduler from the config, the data (and its poses) from the DataModule. What it adds is the
measurement the benchmark is about: accuracy on train, in-test and out-test, and in-test
accuracy per pose (does the network recognise every rotation equally well?).

Logged metric names (TensorBoard; the run record `orbitbench.run.record` is what the sweep reads):
    train/loss (the steps the logger writes: every `log_every_n_steps`), train/acc (per epoch, running
    accuracy in train mode)
    train/<term> (as train/loss): the loss terms a method reports besides its total (e.g. train/ce)
    val/in_test_acc, val/out_test_acc, val/in_test_loss, val/out_test_loss
    test/in_test_acc, test/out_test_acc, test/in_test_loss, test/out_test_loss
    model/n_params
plus the figure `{val,test}/in_test_acc_by_pose` (TensorBoard); `pose_accuracy[split]` keeps the
last per-pose accuracies of both eval splits, and `split_accuracy("train")` measures the eval-mode
train accuracy, both for the run record.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from orbitbench.errors import OrbitbenchError
from orbitbench.methods import PoseViews, build_network, create_method
from orbitbench.splits import PartialOrbits, split_accuracy

EVAL_SPLITS = ("in_test", "out_test")  # == OrbitDataModule.eval_split_names (dataloader_idx -> name)


def paper_adam(params, fused: bool = False) -> torch.optim.Optimizer:
    """The paper's optimiser: Adam, lr 1e-3, betas (0.7, 0.9) (docs/THEORY.md §1).

    `fused`: torch's one-kernel Adam update; faster, and different in the last bits of every weight.
    """
    return torch.optim.Adam(params, lr=1e-3, betas=(0.7, 0.9), fused=True if fused else None)  # None: torch's default path


class PoseAccuracy(Metric):
    """Accuracy for each pose index of a cyclic group: [n_poses], NaN for poses never seen."""

    full_state_update = False

    def __init__(self, n_poses: int) -> None:
        super().__init__()
        self.n_poses = n_poses
        self.add_state("correct", torch.zeros(n_poses, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(n_poses, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, pose: Tensor) -> None:
        one_hot = F.one_hot(pose, self.n_poses).to(torch.float64)  # [B, n_poses]; a sum, deterministic on GPU too
        self.correct += (one_hot * (preds == target).unsqueeze(1)).sum(dim=0)
        self.total += one_hot.sum(dim=0)

    def compute(self) -> Tensor:
        return self.correct / self.total


class OrbitClassifier(L.LightningModule):
    """Classify posed digits with a zoo backbone.

    Args:
        backbone: a zoo name (`orbitbench.models.list_models()`, `timm:<name>`, `c4_pooled(<name>)`).
        backbone_kwargs: keyword arguments of the backbone's builder (e.g. `{depth: 5, width: 1024}`).
        optimizer: a callable `params -> Optimizer`; default the paper's Adam(1e-3, betas (0.7, 0.9)).
        scheduler: an optional callable `optimizer -> LRScheduler`, stepped once per epoch.
        num_classes: number of digit classes.
        method: a registered training method (`orbitbench.methods.list_methods()`).
        method_kwargs: keyword arguments of the method (e.g. `{weight: 1.0}`).
        channels_last: keep convolution weights in NHWC order, the layout oneDNN's CPU kernels (and
            cuDNN's tensor-core ones) run fastest; a no-op for networks without convolutions. With
            `--trainer.precision bf16-mixed` it is the fast setting of benchmarks/RESULTS.md.

        train_eval_autocast: measure the record's eval-mode train accuracy (`split_accuracy("train")`)
            under the run's precision (bf16 autocast with `bf16-mixed`) instead of float32; faster, and
            it can change the recorded train accuracy, so it is off until the tracks are re-seeded.

    `net` is always an `nn.Module` mapping images to logits, whatever the method wraps around
    the backbone; evaluation and the kernel callbacks read only `net`.
    """

    def __init__(
        self,
        backbone: str = "paper_mlp",
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = paper_adam,
        scheduler: LRSchedulerCallable | None = None,
        num_classes: int = 10,
        method: str = "supervised",
        method_kwargs: dict[str, Any] | None = None,
        channels_last: bool = False,
        train_eval_autocast: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=("optimizer", "scheduler"))
        if "num_classes" in (backbone_kwargs or {}):  # the builder would get it twice: a TypeError deep inside
            raise OrbitbenchError(f"--model.backbone_kwargs: num_classes={backbone_kwargs['num_classes']!r} is set by "
                                  "--model.num_classes (the classifier's outputs), not among the backbone's arguments")
        self.method = create_method(method, **(method_kwargs or {}))
        self.net = build_network(self.method, backbone, num_classes, **(backbone_kwargs or {}))
        if channels_last:
            self.net.to(memory_format=torch.channels_last)  # 4-D weights only; inputs follow the weights
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.n_params = sum(p.numel() for p in self.net.parameters())
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.eval_acc = nn.ModuleDict(
            {f"{stage}_{split}": MulticlassAccuracy(num_classes, average="micro")
             for stage in ("val", "test") for split in EVAL_SPLITS}
        )
        self.pose_acc: nn.ModuleDict | None = None  # split -> PoseAccuracy, made in setup()
        self.pose_accuracy: dict[str, list[float]] = {}  # last val/test epoch; NaN = pose not in split
        self.pose_views: PoseViews | None = None  # the training split's pose pairs, bound in setup()
        self._filled_memory: bool | None = None  # fill_uninitialized_memory before fit, restored in teardown

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            # Deterministic mode fills every new tensor with NaN, a debugging aid for kernels that
            # read memory they never wrote; no kernel a fit runs does (the seeded entries verify bit
            # for bit without it), so it is off while fitting and restored in teardown.
            self._filled_memory = torch.utils.deterministic.fill_uninitialized_memory
            torch.utils.deterministic.fill_uninitialized_memory = False
        # The group order and the pose pairs come from the data, known only once it is set up;
        # the method is handed them (it never reaches into the Trainer).
        dm = self.trainer.datamodule
        classes = getattr(dm, "num_classes", None)
        if classes is not None and self.hparams.num_classes < classes:  # else a traceback at the first loss
            raise OrbitbenchError(f"--model.num_classes {self.hparams.num_classes}: the data has {classes} classes; "
                                  f"expected at least {classes}")
        if isinstance(dm, PartialOrbits):
            self.pose_views = PoseViews(dm)
        n_poses = getattr(dm, "n_poses", None)
        if n_poses is not None and (self.pose_acc is None or self.pose_acc["in_test"].n_poses != n_poses):
            self.pose_acc = nn.ModuleDict({split: PoseAccuracy(n_poses) for split in EVAL_SPLITS})

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, logits, terms = self.method.training_step(self.net, batch, self.pose_views)
        self.train_acc.update(logits, batch.label)  # logged once, at the epoch's end
        # Each self.log walks Lightning's result collection; the logger writes step values only every
        # log_every_n_steps, so the other steps' values would be thrown away.
        if self._logger_writes_this_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
            for name, value in terms.items():
                self.log(f"train/{name}", value, on_step=True, on_epoch=False)
        return loss

    def _logger_writes_this_step(self) -> bool:
        """Lightning's own rule for writing step metrics (`log_every_n_steps`, or the last step)."""
        connector = getattr(self._trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def on_train_epoch_end(self) -> None:
        if self.train_acc.update_called:
            self.log("train/acc", self.train_acc.compute(), on_step=False, on_epoch=True, prog_bar=True)
        self.train_acc.reset()

    def _eval_step(self, stage: str, batch, dataloader_idx: int) -> None:
        split = EVAL_SPLITS[dataloader_idx]
        logits = self.net(batch.image)
        accuracy = self.eval_acc[f"{stage}_{split}"]
        accuracy(logits, batch.label)
        log = dict(on_step=False, on_epoch=True, add_dataloader_idx=False, batch_size=batch.label.shape[0])
        self.log(f"{stage}/{split}_acc", accuracy, prog_bar=True, **log)
        self.log(f"{stage}/{split}_loss", F.cross_entropy(logits, batch.label), sync_dist=True, **log)  # mean over ranks
        if self.pose_acc is not None:
            self.pose_acc[split].update(logits.argmax(dim=1), batch.label, batch.pose)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Per-sample rows for `orbitbench predict` (`orbitbench.run.callbacks.prediction_writer.PredictionWriter`)."""
        from orbitbench.run.callbacks.prediction_writer import prediction_rows

        logits = self.net(batch.image)
        return {"image_index": batch.image_index, "pose": batch.pose, "label": batch.label,
                **prediction_rows(logits.detach(), batch.label)}  # fmt: skip

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def teardown(self, stage: str) -> None:
        if stage == "fit" and getattr(self, "_filled_memory", None) is not None:
            torch.utils.deterministic.fill_uninitialized_memory, self._filled_memory = self._filled_memory, None

    def on_fit_start(self) -> None:
        self._log_n_params()

    def on_test_start(self) -> None:
        self._log_n_params()

    def on_validation_epoch_end(self) -> None:
        self._finish_pose_accuracy("val")

    def on_test_epoch_end(self) -> None:
        self._finish_pose_accuracy("test")

    def _log_n_params(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({"model/n_params": float(self.n_params)}, step=0)

    def _finish_pose_accuracy(self, stage: str) -> None:
        if self.pose_acc is None:
            return
        values = {s: m.compute().tolist() for s, m in self.pose_acc.items() if m.update_called}
        for metric in self.pose_acc.values():
            metric.reset()
        if self.trainer.sanity_checking or "in_test" not in values:
            return
        self.pose_accuracy = values
        for logger in self.loggers:
            add_figure = getattr(getattr(logger, "experiment", None), "add_figure", None)
            if add_figure is not None:  # TensorBoard (SummaryWriter); every run has record.json
                add_figure(f"{stage}/in_test_acc_by_pose", pose_accuracy_figure(values["in_test"]), self.global_step)

    def split_accuracy(self, split: str) -> float:
        """Eval-mode accuracy of the network on one DataModule split (`orbitbench.splits.split_accuracy`)."""
        if not self.hparams.get("train_eval_autocast", False):
            return split_accuracy(self.net, self.trainer.datamodule, split, self.device)
        with self.trainer.precision_plugin.forward_context():  # autocast under bf16-mixed
            return split_accuracy(self.net, self.trainer.datamodule, split, self.device)

    def configure_optimizers(self):
        # torch validates hyper-parameters (lr >= 0, betas in [0, 1)) with ValueError: user input.
        try:
            optimizer = self.optimizer_factory(self.parameters())
        except ValueError as error:
            raise OrbitbenchError(f"--model.optimizer: {error}") from error
        if self.scheduler_factory is None:
            return optimizer
        try:
            scheduler = self.scheduler_factory(optimizer)
        except ValueError as error:
            raise OrbitbenchError(f"--model.scheduler: {error}") from error
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/in_test_loss"}}


def pose_accuracy_figure(values: list[float]):
    """A bar chart of in-test accuracy against pose index (NaN poses left empty)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(4.0, 0.25 * len(values)), 3.0), layout="constrained")
    axes = figure.add_subplot()
    axes.bar(range(len(values)), [0.0 if math.isnan(v) else v for v in values], color="tab:blue")
    axes.set(xlabel="pose index k", ylabel="in-test accuracy", ylim=(0, 1), title="in-test accuracy by pose")
    return figure
