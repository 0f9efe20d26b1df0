"""The sweep file: a validated grid of `orbitbench fit` cells (models x methods x group orders x classes x seeds).

The grid's pose axis is named by the DataModule's own declaration (`order_argument`, e.g.
`n_angles` for RotatedMNIST, `n_shifts` for TranslatedMNIST) and its values are checked against
the DataModule's `order_range`; a new group action needs no change here. Everything that can be
checked without training is checked by `check_runnable` before the first cell runs.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orbitbench.errors import OrbitbenchError
from orbitbench.entrants import entrant_id
from orbitbench.io import check_yaml_size, one_line_validation_error, read_text_file

# `data.*` settings that do not change which images are shown (a submission's choice); every other
# DataModule setting is the track's protocol (`orbitbench.leaderboard.integrity.track_protocol`).
PROTOCOL_DATA_KEYS_EXCLUDED = ("batch_size", "num_workers", "data_dir")
Scalar = str | int | float | bool | None
FitValue = Scalar | list[Scalar] | dict[str, Any]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TRACK_PATTERN = r"^[a-z0-9][a-z0-9.-]*$"
MAX_NAME_LENGTH = 100  # names become file and folder names (<track>__<name>.json, runs/sweeps/<name>): under 255 bytes


class Grid(BaseModel):
    """The axes of the sweep; the cells are their Cartesian product.

    Besides these fields the grid holds exactly one pose axis, named after the DataModule's
    `order_argument` (`n_angles: [2, 4, 8]`); `SweepSpec` checks it.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    model: list[str] = Field(min_length=1)
    method: list[str] = Field(default=["supervised"], min_length=1)  # training methods (orbitbench.methods)
    leave_out_class: list[int] = Field(min_length=1)
    seed: list[int] = Field(default=[0], min_length=1)

    @field_validator("model", "method", "leave_out_class", "seed")
    @classmethod
    def _unique(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"values must be unique, got {values}")
        return values

    @field_validator("leave_out_class")
    @classmethod
    def _digit(cls, values: list[int]) -> list[int]:
        if any(v not in range(10) for v in values):
            raise ValueError(f"leave-out classes must be digits 0-9, got {values}")
        return values

    @property
    def axes(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _check_orders(datamodule: str, argument: str, values: Any, low: int, high: int) -> None:
    if not isinstance(values, list) or not values:
        raise ValueError(f"grid.{argument}: expected a non-empty list of group orders, got {values!r}")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"grid.{argument}.{i}: expected an integer group order, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"grid.{argument}.{i}: {argument}={value} is outside {datamodule}'s range {low}..{high}")
    if len(set(values)) != len(values):
        raise ValueError(f"grid.{argument}: values must be unique, got {values}")


class SweepSpec(BaseModel):
    """A sweep file: which grid, on which track, with which `orbitbench fit` settings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    track: str = Field(pattern=TRACK_PATTERN, max_length=MAX_NAME_LENGTH)
    description: str = ""
    datamodule: str  # a class of orbitbench.datamodules (RotatedMNIST) or a dotted path to one
    grid: Grid
    # `orbitbench fit` settings as dotted keys (`trainer.max_epochs: 3`), for every cell ...
    fit: dict[str, FitValue] = {}
    # ... and per model on top (training budget only: data settings are the track's protocol).
    model_fit: dict[str, dict[str, FitValue]] = {}
    # A model's own `orbitbench fit --config` file (models/<name>.yaml), applied before the settings.
    config_files: dict[str, str] = {}
    # The leaderboard's rules for entries run by this file (docs/SWEEPS.md): the convergence rule as
    # data (every group order's mean in-test must reach it, else the network has not learnt the task
    # in distribution and `leaderboard add` / `check` refuse it), and whether the track is ranked at
    # all (a smoke track's entries are listed without ranks).
    min_in_test_acc: float | None = Field(default=None, ge=0, le=1)
    ranked: bool = True

    @model_validator(mode="before")
    @classmethod
    def _budget_adds_the_model(cls, raw: Any) -> Any:
        """A `model_fit` key for a model the grid lacks adds it to the grid: a contributor gives a new
        model its budget with one key (CONTRIBUTING.md) instead of editing grid.model too."""
        if isinstance(raw, dict) and isinstance(raw.get("model_fit"), dict) and isinstance(raw.get("grid"), dict):
            models = raw["grid"].get("model")
            if isinstance(models, list):
                extra = [m for m in raw["model_fit"] if m not in models]
                if extra:
                    raw = {**raw, "grid": {**raw["grid"], "model": [*models, *extra]}}
        return raw

    @field_validator("datamodule")
    @classmethod
    def _known_datamodule(cls, name: str) -> str:
        from orbitbench.datamodules import datamodule_class

        datamodule_class(name)  # an OrbitbenchError (a ValueError) names the accepted ones
        return name

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        argument = self.order_argument
        low, high = self.datamodule_class.order_range
        axes = self.grid.axes
        if argument not in axes:
            raise ValueError(f"datamodule {self.datamodule} needs grid.{argument} (a list of group orders)")
        for other in axes:
            if other != argument:
                raise ValueError(f"grid.{other} does not apply to {self.datamodule}; its group order is grid.{argument}")
        _check_orders(self.datamodule, argument, axes[argument], low, high)
        for key in list(self.fit) + [k for over in self.model_fit.values() for k in over]:
            if key.startswith("-") or not re.fullmatch(r"[A-Za-z_][\w.]*\+?", key):
                raise ValueError(f"fit key {key!r} is not a dotted `orbitbench fit` option like trainer.max_epochs")
        reserved = {f"data.{argument}", "data.leave_out_class", "seed_everything", "model.backbone", "model.method", "data"}
        for key in reserved & set(self.fit):
            raise ValueError(f"fit.{key} is set by the grid for every cell; remove it from fit")
        for model in self.config_files:
            if model not in self.grid.model:
                raise ValueError(f"config_files.{model}: {model!r} is not in grid.model {self.grid.model}")
        for model, over in self.model_fit.items():
            for key in over:
                if key.startswith("data.") or key in reserved:
                    raise ValueError(
                        f"model_fit.{model}.{key}: data settings are the track's protocol and must be "
                        "the same for every model; set them in fit"
                    )
        return self

    @property
    def datamodule_class(self) -> type:
        from orbitbench.datamodules import datamodule_class

        return datamodule_class(self.datamodule)

    @property
    def order_argument(self) -> str:
        """The DataModule argument that sets the group order (`n_angles`): the grid's pose axis."""
        return self.datamodule_class.order_argument

    @property
    def n_poses(self) -> list[int]:
        return list(self.grid.axes[self.order_argument])

    def data_arguments(self) -> dict[str, Any]:
        """The DataModule's constructor arguments the sweep sets (`data.<name>` keys of `fit`)."""
        return {k.removeprefix("data."): v for k, v in self.fit.items() if k.startswith("data.") and "." not in k[5:]}

    def training_config(self, model: str) -> dict[str, Any]:
        """Everything a submission chooses for `model`: the non-protocol fit settings."""
        merged = {**self.fit, **self.model_fit.get(model, {})}
        config = {
            key: value
            for key, value in sorted(merged.items())
            if not key.startswith("data.") or key.removeprefix("data.") in PROTOCOL_DATA_KEYS_EXCLUDED
        }
        if model in self.config_files:
            path = Path(self.config_files[model])
            config["config_file"] = str(path)
            config["config_file_content"] = yaml.safe_load(path.read_text()) if path.is_file() else None
        return config

    def cells(self) -> list[Cell]:
        return [
            Cell(model, n, c, s, method)
            for model, method, n, c, s in itertools.product(
                self.grid.model, self.grid.method, self.n_poses, self.grid.leave_out_class, self.grid.seed
            )
        ]

    def with_models(self, models: list[str], model_dir: Path = Path("models")) -> SweepSpec:
        """The same sweep for other models (a contributor's model on a track's protocol).

        A model the sweep file does not configure gets `<model_dir>/<name>.yaml` as its config
        file when there is one (CONTRIBUTING step 2): the settings that are the submission's choice.
        """
        if not models:
            raise OrbitbenchError("--models names no model")
        config_files = {m: v for m, v in self.config_files.items() if m in models}
        for model in models:
            own = model_dir / f"{model}.yaml"
            if model not in config_files and own.is_file():
                config_files[model] = str(own)
        try:
            return SweepSpec.model_validate(
                {**self.model_dump(), "grid": {**self.grid.model_dump(), "model": models},
                 "model_fit": {m: v for m, v in self.model_fit.items() if m in models},
                 "config_files": config_files}
            )
        except ValidationError as error:
            raise OrbitbenchError(one_line_validation_error("--models", error)) from None


@dataclass(frozen=True)
class Cell:
    model: str
    n_poses: int
    leave_out_class: int
    seed: int
    method: str = "supervised"

    @property
    def cell_id(self) -> str:
        """A filesystem-safe, human-readable id: `paper_mlp-n4-c3-s0`, `paper_mlp+pose_consistency-n4-c3-s0`.

        `supervised` adds nothing, so the cells of sweeps made before methods keep their ids.
        """
        slug = re.sub(r"[^A-Za-z0-9_.]+", "_", self.model).strip("_")
        return f"{entrant_id(slug, self.method)}-n{self.n_poses}-c{self.leave_out_class}-s{self.seed}"


def parse_sweep_text(text: str, source: str) -> SweepSpec:
    check_yaml_size(text, source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise OrbitbenchError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(raw, dict):
        raise OrbitbenchError(f"{source}: a sweep file must be a YAML mapping with name, track, datamodule, grid")
    from orbitbench import trust

    trust.check_config(raw, source)  # before validation builds anything (the DataModule check imports it)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise OrbitbenchError(one_line_validation_error(source, error)) from None
    trust.check_sweep(spec, source)
    return spec


def load_sweep_file(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise OrbitbenchError(f"sweep file {str(path)!r} does not exist; see sweeps/*.yaml for examples")
    return parse_sweep_text(read_text_file(path, "sweep file"), str(path))


def check_runnable(spec: SweepSpec) -> None:
    """Everything knowable before training: model names, config files, each DataModule of the grid.

    Building each model and each (group order, leave-out class) DataModule once is cheap (no
    data is loaded) and exact: a grid that would fail in its fifth cell fails here instead.
    """
    from orbitbench.methods import create_method
    from orbitbench.models import create_model

    for name in spec.grid.model:
        create_model(name)  # raises OrbitbenchError naming the accepted models
    for name in spec.grid.method:
        create_method(name)  # likewise for the methods
    for model in spec.grid.model:
        file_settings = config_file_settings(model, spec.config_files[model]) if model in spec.config_files else {}
        check_cell_settings({**file_settings, **spec.fit, **spec.model_fit.get(model, {})}, model)
    data = spec.data_arguments()
    for n, c in itertools.product(spec.n_poses, spec.grid.leave_out_class):
        try:
            spec.datamodule_class(**{spec.order_argument: n, "leave_out_class": c, **data})
        except (OrbitbenchError, TypeError) as error:
            raise OrbitbenchError(f"grid cell {spec.order_argument}={n}, leave_out_class={c}: {error}") from None


# The top-level keys of an `orbitbench fit` config (LightningCLI's sections and orbitbench's options).
FIT_SECTIONS = ("seed_everything", "trainer", "model", "data", "checkpoint", "optimizer", "lr_scheduler",
                "ckpt_path", "override_data", "split", "weights_only")
# Set by the sweep for every cell (`fit_argv`): a value given for them would be dropped without a word.
SWEEP_SET = ("trainer.logger", "trainer.default_root_dir", "ckpt_path")
DEFAULT_MAX_EPOCHS = 10  # orbitbench fit's (orbitbench.run.cli)


def config_file_settings(model: str, path: str) -> dict[str, Any]:
    """A model's config file as dotted `orbitbench fit` settings; one line naming the file and what
    was expected when it is not such a file (its content is never echoed: it may be any file)."""
    where = f"config_files.{model}: {path}"
    text = read_text_file(Path(path), f"config_files.{model}")
    check_yaml_size(text, where)
    expected = f"expected a YAML mapping of `orbitbench fit` settings with top-level keys among {', '.join(FIT_SECTIONS)}"
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError:
        raise OrbitbenchError(f"{where}: not valid YAML; {expected}") from None
    if not isinstance(content, dict):
        raise OrbitbenchError(f"{where}: not a mapping; {expected}")
    if not all(isinstance(key, str) and key in FIT_SECTIONS for key in content):
        raise OrbitbenchError(f"{where}: has top-level keys that are no `orbitbench fit` section; {expected}")

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(value, dict) or "class_path" in value:
            return {prefix: value}
        items = [(k, v) for k, v in value.items() if k != "init_args"] + list((value.get("init_args") or {}).items())
        return {k2: v2 for k, v in items for k2, v2 in flat(v, f"{prefix}.{k}").items()} or {prefix: value}

    return {key: value for section, block in content.items() for key, value in flat(block, section).items()}


def check_cell_settings(settings: dict[str, Any], model: str) -> None:
    """Refuse, before any cell runs, settings that make every cell of `model` fail or record
    nothing, and settings the sweep replaces (which would be dropped without a word)."""
    def get(key: str) -> Any:
        return next((v for k, v in reversed(settings.items()) if k.removesuffix("+") == key), None)

    for key in settings:
        if any(key == reserved or key.startswith(reserved + ".") for reserved in SWEEP_SET):
            raise OrbitbenchError(f"{key} (model {model}): set by the sweep for every cell (TensorBoard logs in the "
                                  "cell's folder, a fresh start); remove it from the sweep file or config file")
    max_epochs = get("trainer.max_epochs")
    max_epochs = DEFAULT_MAX_EPOCHS if max_epochs is None else max_epochs
    val_every = get("trainer.check_val_every_n_epoch")
    refused = {
        "trainer.fast_dev_run": get("trainer.fast_dev_run") not in (None, False, 0),
        "trainer.max_epochs": max_epochs == 0,
        "trainer.max_steps": get("trainer.max_steps") == 0,
        "trainer.limit_train_batches": get("trainer.limit_train_batches") == 0,
        "trainer.limit_val_batches": get("trainer.limit_val_batches") == 0,
        "trainer.enable_checkpointing": get("trainer.enable_checkpointing") is False,
        "trainer.check_val_every_n_epoch": isinstance(val_every, int) and isinstance(max_epochs, int)
        and 0 < max_epochs < val_every,
    }
    for key, bad in refused.items():
        if bad:
            raise OrbitbenchError(f"{key}={get(key)!r} (model {model}): every cell would fail or end without a run "
                                  "record (trained, validated and checkpointed); remove it for a sweep")


def fit_argv(spec: SweepSpec, cell: Cell, log_dir: Path) -> list[str]:
    """The `orbitbench fit` command line of one cell: grid values, then fit, then model_fit."""
    settings: dict[str, FitValue] = {
        "seed_everything": cell.seed,
        "model.backbone": cell.model,
        "model.method": cell.method,
        "data": spec.datamodule,
        f"data.{spec.order_argument}": cell.n_poses,
        "data.leave_out_class": cell.leave_out_class,
        "trainer.enable_progress_bar": False,  # the sweep's bar is over cells; fit.log stays readable
        **spec.fit,
        **spec.model_fit.get(cell.model, {}),
        "trainer.logger.class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "trainer.logger.init_args.save_dir": str(log_dir),
        "trainer.logger.init_args.name": "",
        "trainer.logger.init_args.version": "",
        "trainer.default_root_dir": str(log_dir),
    }
    config = [f"--config={spec.config_files[cell.model]}"] if cell.model in spec.config_files else []
    return ["fit", *config, *(f"--{key}={_cli_value(value)}" for key, value in settings.items())]


def _cli_value(value: FitValue) -> str:
    """A fit setting as jsonargparse reads it on the command line (YAML/JSON flow syntax)."""
    return value if isinstance(value, str) else json.dumps(value)
