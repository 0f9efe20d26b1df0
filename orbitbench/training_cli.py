"""`orbitbench fit | validate | test`: a LightningCLI over `OrbitClassifier` and the orbit DataModules.

Config-first: `models/<name>.yaml`, `datamodules/<name>.yaml` and `configs/<preset>.yaml` combine
with `--config` and any `--section.key value` override. On top of plain LightningCLI this adds what
the benchmark needs to be trustworthy and easy to read:

- defaults that give a useful run in about a minute on a laptop CPU (paper MLP, 8 angles, 10 epochs);
- TensorBoard logs under `runs/<model>-<data>/version_N`, a checkpoint every epoch plus `last.ckpt`;
- exact resumption: every step reseeds all RNGs from (seed, step), the DataModule shuffles from
  (seed, epoch), so `--ckpt_path last` after a kill ends with the metrics of an unbroken run;
- `record.json` in the run directory (`orbitbench.record`: settings, seeds, final accuracies);
- a printed summary after `fit`; bad values end in one `orbitbench: ...` line and exit status 2.
"""

from __future__ import annotations

import os
import random
import re
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from orbitbench.datamodules import OrbitDataModule
from orbitbench.errors import OrbitbenchError
from orbitbench.module import OrbitClassifier
from orbitbench.record import RECORD_FILE, RunRecordWriter, describe_run

RUNS_DIR = "runs"
DEFAULT_SEED = 125  # the paper's seed
MAX_GRID_POSES = 16


class ReseedEachStep(Callback):
    """Seed torch / numpy / random from (base seed, global step) before every training step.

    Lightning does not checkpoint RNG states, and when it resumes it creates the train iterator
    (which draws from the global RNG) at another point than in an unbroken run; seeding each step
    from the step counter makes dropout masks identical either way. The DataModule's sampler is
    already a function of (seed, epoch). The base seed is the run's `seed_everything` value.
    """

    def __init__(self) -> None:
        self.base_seed: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")
        self.base_seed = int(seed) if seed is not None else None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.base_seed is None:
            return
        seed = (self.base_seed * 1_000_003 + trainer.global_step) % 2**32
        torch.manual_seed(seed)  # also seeds every CUDA device
        np.random.seed(seed)
        random.seed(seed)


class TrainOrbitGrid(Callback):
    """Log a grid of sample orbits of the training data: one image per class (rows) x poses (columns).

    Out-test cells (the held-out poses of the leave-out class, never trained on) are dimmed.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        experiment = getattr(trainer.logger, "experiment", None)
        if not isinstance(dm, OrbitDataModule) or not hasattr(experiment, "add_image"):
            return
        from torchvision.utils import make_grid

        train_images = dm.splits["train"][:, 0]
        labels = dm.digits.labels
        rows = [int(train_images[labels[train_images] == c][0]) for c in range(dm.num_classes)
                if (labels[train_images] == c).any()]
        poses = torch.linspace(0, dm.n_poses - 1, min(dm.n_poses, MAX_GRID_POSES)).round().long().unique()
        image_index = torch.tensor(rows).repeat_interleave(len(poses))  # [rows*cols], row-major
        pose = poses.repeat(len(rows))
        cells = dm.materialize(image_index, pose).cpu()  # [rows*cols, 1, 28, 28]
        cells = cells / cells.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        held = (labels[image_index] == dm.hparams.leave_out_class) & torch.isin(pose, torch.tensor(dm.held_out_poses))
        cells[held] *= 0.3
        grid = make_grid(cells, nrow=len(poses), padding=1, pad_value=0.5)
        experiment.add_image("data/train_orbits", grid, 0)


def _run_name(config) -> str:
    """`<backbone>[+<method>]-<DataModule>`, path-safe: `c4_pooled(paper_mlp)` -> `c4_pooled-paper_mlp`.

    A method other than `supervised` is part of the name, so `--ckpt_path last` never resumes
    another method's run.
    """
    backbone = str(config.model.init_args.get("backbone", "model"))
    method = str(config.model.init_args.get("method") or "supervised")
    backbone += "" if method == "supervised" else f"+{method}"
    data = str(config.data.class_path).rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.]+", "-", f"{backbone}-{data}").strip("-")


def _find_last_checkpoint(save_dir: str, name: str) -> Path:
    """The newest `last.ckpt` under `<save_dir>/<name>/version_*/checkpoints`."""
    candidates = sorted(Path(save_dir, name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise OrbitbenchError(
            f"--ckpt_path last: no last.ckpt under {Path(save_dir, name)}/*/checkpoints; "
            "expected a previous run of this configuration (or give the checkpoint file's path)"
        )
    return candidates[-1]


class OrbitbenchCLI(LightningCLI):
    """LightningCLI with orbitbench defaults (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_epochs": 1,
                "checkpoint.save_top_k": 1,  # with no monitor: the latest epoch; -1 keeps every epoch
                "model": {"class_path": "orbitbench.module.OrbitClassifier"},
                "data": {"class_path": "orbitbench.datamodules.RotatedMNIST"},
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": RUNS_DIR, "name": None},
                },
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        logger = config.trainer.logger
        is_tensorboard = (
            logger is not None and not isinstance(logger, (bool, list))
            and str(logger.class_path).endswith("TensorBoardLogger")
        )
        if is_tensorboard and logger.init_args.get("name") is None:
            logger.init_args.name = _run_name(config)
        if config.get("ckpt_path") == "last":
            if not is_tensorboard:
                raise OrbitbenchError("--ckpt_path last needs the default TensorBoardLogger; give the checkpoint path")
            last = _find_last_checkpoint(logger.init_args.save_dir, logger.init_args.name)
            config.ckpt_path = str(last)
            if self.subcommand == "fit":  # continue logging in the interrupted run's directory
                logger.init_args.version = last.parent.parent.name

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, ImportError, MisconfigurationException) as error:  # e.g. an unavailable accelerator
            raise OrbitbenchError(f"trainer: {' '.join(str(error).split())}") from error

    def _setup_data_early(self, stage: str) -> None:
        # The Trainer creates the log directory before it sets up the data; loading the digits
        # first means a bad source fails without writing a half-made run. setup() is idempotent.
        if isinstance(self.datamodule, OrbitDataModule):
            self.datamodule.setup(stage)

    def before_fit(self) -> None:
        self._setup_data_early("fit")

    def before_validate(self) -> None:
        self._setup_data_early("validate")

    def before_test(self) -> None:
        self._setup_data_early("test")

    def after_fit(self) -> None:
        print(fit_summary(self.trainer, self.model), flush=True)


def fit_summary(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """A few human lines: what ran, the three accuracies, where logs and checkpoint are."""
    record = describe_run(trainer, pl_module)
    metrics = trainer.callback_metrics
    written = next((c.record for c in trainer.callbacks if isinstance(c, RunRecordWriter) and c.record), None)
    train_acc = written.metrics.train_acc if written is not None else None  # eval mode, at the end of fit

    def fmt(key: str) -> str:
        return f"{float(metrics[key]):.3f}" if key in metrics else "n/a"

    data = record["data"]
    where = ", ".join(f"{k}={v}" for k, v in (("n_poses", data.n_poses), ("leave_out_class", data.hparams.get("leave_out_class"))) if v is not None)
    lines = [
        f"orbitbench fit: {record['model'].backbone}{'' if record['model'].method == 'supervised' else ' + ' + record['model'].method} on {data.datamodule}({where}), "
        f"{trainer.current_epoch} epoch{'' if trainer.current_epoch == 1 else 's'}, {record['model'].n_params:,} parameters",
        f"  accuracy     train {'n/a' if train_acc is None else f'{train_acc:.3f}'} | in-test {fmt('val/in_test_acc')} | out-test {fmt('val/out_test_acc')}",
    ]
    if trainer.log_dir:
        lines.append(f"  logs         {trainer.log_dir} ({RECORD_FILE}, TensorBoard events)")
    if record["last_checkpoint"]:
        lines.append(f"  checkpoint   {record['last_checkpoint']}")
    lines += [c.summary_line() for c in trainer.callbacks if callable(getattr(c, "summary_line", None))]
    if trainer.logger is not None and getattr(trainer.logger, "save_dir", None):
        lines.append(f"  view with    tensorboard --logdir {trainer.logger.save_dir}")
    return "\n".join(lines)


def _user_error(error: BaseException) -> OrbitbenchError | None:
    """The `OrbitbenchError` behind `error`: jsonargparse wraps errors raised while instantiating."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OrbitbenchError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def condense_parser_error(message: str) -> str:
    """One readable line from a jsonargparse error: the full key, what was expected, what was given.

    `Parser key "data": ... Parser key "n_angles": Expected a <class 'int'>. Got value: abc` becomes
    `--data.n_angles: expected int, got 'abc'`.
    """
    text = " ".join(message.split())
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys:
        return text[:300]
    key = ".".join(keys)
    detail = text.rsplit(f'Parser key "{keys[-1]}":', 1)[1]
    core = detail.split(" - Expected a <class 'NoneType'>")[0]  # drop the Optional[...] alternative
    nested = re.search(r"val='(.*?)'\)", detail)
    given = nested or re.search(r"(?:Got value|Given value): (.+?)(?: - |$)", detail)
    expected = list(dict.fromkeys(re.findall(r"Expected a <class '([\w.]+)'>", core)))
    if expected:
        got = f", got {given.group(1).strip()!r}" if given else ""
        return f"--{key}: expected {' or '.join(expected)}{got}"
    core = re.sub(r"Does not validate against any of the Union subtypes Subtypes: \[.*?\] Errors:", "", core)
    return f"--{key}: {core.strip(' -')}"[:300]


def run_lightning_cli(argv: list[str]) -> int:
    """Run `fit|validate|test` with `argv` (subcommand first); 0 on success, 2 on bad input."""
    try:
        with warnings.catch_warnings():
            # cli.main passes sys.argv[1:] as `args`; Lightning warns when both are present.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            # Lightning's own internal use of a deprecated torch pytree API; nothing a user can act on.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            _run(argv)
    except ArgumentError as error:
        print(f"orbitbench: {condense_parser_error(str(error))}", file=sys.stderr)
        return 2
    except (ValueError, MisconfigurationException) as error:  # OrbitbenchError is a ValueError
        user_error = _user_error(error) or (error if isinstance(error, MisconfigurationException) else None)
        if user_error is None:
            raise
        print(f"orbitbench: {' '.join(str(user_error).split())}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help, --print_config
        return exit_.code if isinstance(exit_.code, int) else 0
    return 0


def _run(argv: list[str]) -> None:
    """Build and run the CLI; `args=argv` so tests and `orbitbench.cli` can call it in-process."""
    OrbitbenchCLI(
        OrbitClassifier,
        OrbitDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=DEFAULT_SEED,
        trainer_defaults={
            "max_epochs": 10,
            "deterministic": True,
            "log_every_n_steps": 10,
            "callbacks": [ReseedEachStep(), TrainOrbitGrid(), RunRecordWriter()],
        },
        parser_kwargs={"exit_on_error": False},
        save_config_kwargs={"overwrite": True},
        args=argv,
        auto_configure_optimizers=False,
    )
