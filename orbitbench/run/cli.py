"""`orbitbench fit | validate | test`: a LightningCLI over `OrbitClassifier` and the orbit DataModules.

Config-first: `models/<name>.yaml`, `datamodules/<name>.yaml` and `configs/<preset>.yaml` combine
with `--config` and any `--section.key value` override. On top of plain LightningCLI this adds what
the benchmark needs to be trustworthy and easy to read:

- defaults that give a useful run in about a minute on a laptop CPU (paper MLP, 8 angles, 10 epochs);
- TensorBoard logs under `runs/<model>-<data>-n<order>-c<class>/version_N` (CSVLogger: the same folder name; no
  logger: record, config and checkpoints still go there), a checkpoint every epoch plus `last.ckpt`;
- one plain line per epoch instead of a progress bar when stdout is not a terminal (a log file);
- exact resumption: every step reseeds all RNGs from (seed, step), the DataModule shuffles from
  (seed, epoch), so `--ckpt_path last` after a kill ends with the metrics of an unbroken run;
- `record.json` in the run directory (`orbitbench.run.record`: settings, seeds, final accuracies);
- a printed summary after `fit`; bad values end in one `orbitbench: ...` line and exit status 2.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
from jsonargparse import ArgumentError
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from orbitbench.datamodules import OrbitDataModule
from orbitbench.errors import OrbitbenchError, condense_parser_error
from orbitbench.flags import class_list_flags, wrap_single_values
from orbitbench.entrants import entrant_id
from orbitbench.errors import Interrupted
from orbitbench.io import check_can_create, check_config_args, signals_raise_interrupted
from orbitbench.run.callbacks import (EmpiricalNTKCallback, HParamsSession, PlainProgress, PredictionWriter,
                                      ReseedEachStep, RunRecordWriter, TrainOrbitGrid)
from orbitbench.run.callbacks.record_writer import run_log_dir
from orbitbench.run.checkpoints import EVAL_COMMANDS, FAILED, AtomicCheckpointIO, check_checkpoint_settings, discard_failed_run, place_eval_run
from orbitbench.run.folders import NAMED_LOGGERS, ClaimedFolder, claim_run_folders, is_disk_full, release_all
from orbitbench.run.module import OrbitClassifier
from orbitbench.run.summary import fit_summary

RUNS_DIR = "runs"
DEFAULT_SEED = 125  # the paper's seed
MAX_SEED = 2**32 - 1  # numpy's seed range


def _run_name(config) -> str:
    """`<backbone>[+<method>]-<DataModule>-n<order>-c<leave-out class>`, path-safe:
    `c4_pooled(paper_mlp)` -> `c4_pooled-paper_mlp`.

    The group order and leave-out class are in the name so TensorBoard's run list tells fits of
    one model apart, and `--ckpt_path last` resumes only a run of the same cell; a method other
    than `supervised` is part of it, so it never resumes another method's run either.
    """
    backbone = entrant_id(str(config.model.init_args.get("backbone", "model")), config.model.init_args.get("method"))
    data = str(config.data.class_path).rsplit(".", 1)[-1]
    args = config.data.get("init_args") or {}
    module, _, name = str(config.data.class_path).rpartition(".")
    # The parser has imported the class already; its declaration names the group order's argument.
    argument = getattr(getattr(sys.modules.get(module), name, None), "order_argument", None) or "n_poses"
    order = args.get(argument)
    parts = [backbone, data] + ([f"n{order}"] if order is not None else [])
    if args.get("leave_out_class") is not None:
        parts.append(f"c{args.get('leave_out_class')}")
    return re.sub(r"[^A-Za-z0-9_.]+", "-", "-".join(str(p) for p in parts)).strip("-")


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

    def __init__(self, *args, argv: list[str], **kwargs) -> None:
        self.argv = list(argv)
        self.folders: list[ClaimedFolder] = []  # the run folders this process holds (orbitbench.run.folders)
        try:
            super().__init__(*args, args=argv, **kwargs)
        except BaseException:
            release_all(self.folders, failed=True)
            raise
        release_all(self.folders)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_argument(
            "--override_data", type=bool, default=False,
            help="with --ckpt_path: allow data settings other than the checkpoint's (e.g. evaluate on another group order)",
        )
        parser.add_argument(
            "--split", type=Literal["out_test", "in_test", "train"], default="out_test",
            help="predict: the split whose samples are predicted",
        )
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_epochs": 1,
                "checkpoint.save_top_k": 1,  # with no monitor: the latest epoch; -1 keeps every epoch
                # The paper's Adam as a class-path default, so `--model.optimizer.lr 3e-4` works.
                "model": {
                    "class_path": "orbitbench.run.module.OrbitClassifier",
                    "init_args": {"optimizer": {"class_path": "torch.optim.Adam",
                                                "init_args": {"lr": 1e-3, "betas": [0.7, 0.9]}}},
                },
                "data": {"class_path": "orbitbench.datamodules.RotatedMNIST"},
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": RUNS_DIR, "name": None, "default_hp_metric": False},
                },
            }
        )

    def _parse_ckpt_path(self) -> None:
        """Restore the model and data settings a checkpoint was trained with; refuse conflicting ones.

        Replaces Lightning's version, which overwrites the model settings without a word and never
        looks at the data settings (see `orbitbench.run.checkpoints`).
        """
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        if config is None or not config.get("ckpt_path") or config.ckpt_path == "last":
            return  # "last" is resolved (and checked) in before_instantiate_classes
        check_checkpoint_settings(self, subcommand, config.ckpt_path)

    def _set_seed(self) -> None:
        """Lightning's, with a seed outside numpy's range as one line instead of a traceback."""
        seed = self._get(self.config, "seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
            raise OrbitbenchError(f"--seed_everything {seed}: expected an integer from 0 to {MAX_SEED} "
                                  "(or true for a random seed, false for none)")
        super()._set_seed()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.get("weights_only") is False:
            raise OrbitbenchError("--weights_only false: orbitbench loads checkpoints as data only "
                                  "(weights_only=True; docs/ARCHITECTURE.md, trust model)")
        if "weights_only" in config:
            config.weights_only = True  # Lightning's own load of --ckpt_path: torch.load(weights_only=True)
        logger = config.trainer.logger
        is_tensorboard = (
            logger is not None and not isinstance(logger, (bool, list))
            and str(logger.class_path).endswith("TensorBoardLogger")
        )
        for each in logger if isinstance(logger, list) else [logger]:  # CSV logs get the run name too
            named = each is not None and not isinstance(each, bool) and str(each.class_path).endswith(NAMED_LOGGERS)
            if named and each.init_args.get("name") is None:
                each.init_args.name = _run_name(config)
        if is_tensorboard:
            check_can_create(logger.init_args.save_dir, "--trainer.logger.init_args.save_dir")
        if config.get("ckpt_path") == "last":
            if not is_tensorboard:
                raise OrbitbenchError("--ckpt_path last needs the default TensorBoardLogger; give the checkpoint path")
            last = _find_last_checkpoint(logger.init_args.save_dir, logger.init_args.name)
            config.ckpt_path = str(last)
            check_checkpoint_settings(self, self.subcommand, config.ckpt_path)
            if self.subcommand == "fit":  # continue logging in the interrupted run's directory
                logger.init_args.version = last.parent.parent.name
        if self.subcommand in EVAL_COMMANDS and is_tensorboard and config.get("ckpt_path"):
            split = config.split if self.subcommand == "predict" else None
            eval_folder = place_eval_run(logger, Path(config.ckpt_path), self.subcommand, split)
            self.folders += [eval_folder] if eval_folder is not None else []
        # Before the Trainer exists: the run's folder is taken now, not when the logger first asks.
        self.folders += claim_run_folders(config, Path(RUNS_DIR, _run_name(config)), held=self.folders)

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> L.Trainer:
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        other_bar = any(isinstance(c, ProgressBar) for c in [*given, *callbacks])
        if not sys.stdout.isatty() and config.get("enable_progress_bar") is not False and not other_bar:
            callbacks = [*callbacks, PlainProgress()]  # a log file gets a line per epoch, not bar redraws
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):  # checkpoints written whole or not at all
            config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
        return super()._instantiate_trainer(config, callbacks)

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

    def before_predict(self) -> None:
        if isinstance(self.datamodule, OrbitDataModule):
            self.datamodule.predict_split = self.config.predict.split
        self._setup_data_early("predict")

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:  # under DDP every rank runs this
            log_dir = run_log_dir(self.trainer)
            if log_dir is not None:  # a resumed run that finished is no longer a failed one
                Path(log_dir, FAILED).unlink(missing_ok=True)
            print(fit_summary(self.trainer, self.model), flush=True)

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning's; a failed run leaves nothing behind, weights that do not fit the model (an
        edited checkpoint) are one line."""
        try:
            super()._run_subcommand(subcommand)
        except BaseException as error:
            left = discard_failed_run(self.trainer, self.folders)
            if isinstance(error, (Interrupted, SIGTERMException)):  # the second: Lightning saw the signal first
                stop = error if isinstance(error, Interrupted) else Interrupted(f"{subcommand} stopped by SIGTERM", signal.SIGTERM)
                raise Interrupted(f"{stop}{left}", stop.signum) from None
            ckpt = self.config[subcommand].get("ckpt_path")
            if isinstance(error, RuntimeError) and ckpt and "Error(s) in loading state_dict" in str(error):
                detail = " ".join(str(error).split("\n", 1)[-1].split())
                raise OrbitbenchError(f"--ckpt_path {ckpt}: its weights do not fit the model its settings build "
                                      f"(edited, or saved by another model): {detail[:240]}") from None
            raise

    def after_predict(self) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, PredictionWriter) and callback.written:
                print(f"orbitbench predict: {', '.join(str(p) for p in callback.written)}", flush=True)


def _user_error(error: BaseException) -> OrbitbenchError | None:
    """The `OrbitbenchError` behind `error` (jsonargparse wraps errors raised while instantiating),
    or a missing optional package (`WandbLogger` without wandb, `RichProgressBar` without rich)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OrbitbenchError):
            return error
        if isinstance(error, ImportError):
            return OrbitbenchError(f"a package this configuration needs is not installed: {error}")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class _DropTips(logging.Filter):
    """Lightning advertises a cloud logger on every run, and reports a SIGTERM the `orbitbench:`
    line reports too; nothing a user of orbitbench can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg) and "Received SIGTERM" not in str(record.msg)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").addFilter(_DropTips())


@contextlib.contextmanager
def _quiet_disk_full_threads():
    """TensorBoard's writer thread prints its full-disk error as a traceback; the main thread meets
    the same error at the next flush and reports it in one line, so the thread's copy is dropped."""
    previous = threading.excepthook

    def hook(args) -> None:
        if args.exc_value is None or not is_disk_full(args.exc_value):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def run_lightning_cli(argv: list[str]) -> int:
    """Run `fit|validate|test` with `argv` (subcommand first); 0 on success, 2 on bad input."""
    try:
        with warnings.catch_warnings():
            # cli.main passes sys.argv[1:] as `args`; Lightning warns when both are present.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            # Lightning's own internal use of a deprecated torch pytree API; nothing a user can act on.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            if argv and argv[0] in EVAL_COMMANDS:
                # Evaluating a checkpoint needs none of the callbacks that measured its training.
                warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`")
                warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
            check_config_args(argv)
            with signals_raise_interrupted(argv[0] if argv else "orbitbench"), _quiet_disk_full_threads():
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
    except OSError as error:
        if not is_disk_full(error):
            raise
        where = error.filename or "the run's files"
        print(f"orbitbench: cannot write {where}: {error.strerror or error} (is the disk full?); "
              "a run with checkpoints is kept and marked FAILED, one without is removed", file=sys.stderr)
        return 2
    except (Interrupted, SIGTERMException) as stop:  # Lightning's SIGTERMException: the signal seen in a loop
        stop = stop if isinstance(stop, Interrupted) else Interrupted(f"{argv[0]} stopped by SIGTERM", signal.SIGTERM)
        print(f"orbitbench: {' '.join(str(stop).split())}", file=sys.stderr)
        return stop.exit_status
    except SystemExit as exit_:  # --help, --print_config
        return exit_.code if isinstance(exit_.code, int) else 0
    return 0


def list_flags() -> set[str]:
    """The Lightning commands' flags that take only lists (`orbitbench.flags`): `--data.held_out_poses 0`."""
    from orbitbench.datamodules import RotatedMNIST, TranslatedMNIST

    return (
        class_list_flags("data", [OrbitDataModule, RotatedMNIST, TranslatedMNIST], subclass_mode=True)
        | class_list_flags("model", [OrbitClassifier], subclass_mode=True)
        | class_list_flags("trainer.callbacks", [EmpiricalNTKCallback], subclass_mode=True)
        | class_list_flags("trainer", [L.Trainer]) | class_list_flags("checkpoint", [ModelCheckpoint])
    )


def _run(argv: list[str]) -> None:
    """Build and run the CLI; `args=argv` so tests and `orbitbench.cli` can call it in-process."""
    argv = wrap_single_values(argv, list_flags())
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
            "callbacks": [ReseedEachStep(), TrainOrbitGrid(), RunRecordWriter(), HParamsSession(), PredictionWriter()],
        },
        parser_kwargs={"exit_on_error": False},
        save_config_kwargs={"overwrite": True},
        argv=argv,
        auto_configure_optimizers=False,
    )
