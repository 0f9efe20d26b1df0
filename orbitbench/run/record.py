"""The run record: `record.json`, the one contract between a run and everything that reads it.

Every `orbitbench fit | validate | test` writes it atomically into the run's log dir when the
stage ends (`RunRecordWriter`, always on). The sweep, the leaderboard and any analysis read it
with `load_record`; nothing reads TensorBoard files or guesses metric names. Each metric has
exactly one name:

    metrics.train_acc               accuracy on the training split, network in eval mode, measured
                                    at the end of fit (None for validate / test); the running
                                    train-mode `train/acc` stays in TensorBoard only
    metrics.in_test_acc, out_test_acc, in_test_loss, out_test_loss   from the last val (fit,
                                    validate) or test loop
    metrics.in_test_acc_per_pose, out_test_acc_per_pose   [n_poses], null = pose not in the split
    predictions                     the kernel predictions (`KernelPredictions`: probe, the network on
                                    it, one `PredictorMeasurement` per predictor of the registry
                                    `orbitbench.theory.registry`); None when none were measured
    callbacks[<class name>]         `record_summary()` of any other callback that has one
    seeds.seed_everything           the global seed (`--seed_everything`)
    seeds.data_split_seed           the DataModule's split / subsampling seed (`--data.seed`)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from orbitbench.errors import OrbitbenchError
from orbitbench.io import one_line_validation_error, read_text_file

RECORD_FILE = "record.json"
Accuracy = float
PerPose = list[float | None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    backbone: str
    backbone_kwargs: dict[str, Any] | None = None
    method: str = "supervised"  # the training method (orbitbench.methods); records before methods: supervised
    method_kwargs: dict[str, Any] | None = None
    num_classes: int | None = None
    n_params: int = Field(ge=1)


class DataSettings(_Strict):
    datamodule: str  # RotatedMNIST (exported by orbitbench.datamodules) or the import path package.module.Class
    group: str | None = None  # the group action's kind, e.g. rotation
    order_argument: str | None = None  # e.g. n_angles
    n_poses: int | None = Field(default=None, ge=1)
    hparams: dict[str, Any] = {}  # every DataModule constructor argument but the order
    digits: str | None = None  # the source the digits came from (`auto` resolved: mnist or mnist5k); older records: None
    n_images: int | None = None  # base images before any group action


class Seeds(_Strict):
    seed_everything: int | None
    data_split_seed: int | None


class Metrics(_Strict):
    train_acc: Accuracy | None = Field(default=None, ge=0, le=1)
    in_test_acc: Accuracy = Field(ge=0, le=1)
    out_test_acc: Accuracy = Field(ge=0, le=1)
    in_test_loss: float | None = None
    out_test_loss: float | None = None
    in_test_acc_per_pose: PerPose = []
    out_test_acc_per_pose: PerPose = []


class CurvePoint(BaseModel):
    """The at-scale regression at one nested sample size m."""

    model_config = ConfigDict(extra="allow")

    m: int = Field(ge=1)
    out_test: float = Field(ge=0, le=1)
    in_test: float = Field(ge=0, le=1)
    kappa: float | None = Field(default=None, ge=-1, le=1)


class ScaleSpread(BaseModel):
    """Predicted out-test accuracy and kappa of two independent draws of m training points."""

    model_config = ConfigDict(extra="allow")

    m: int = Field(ge=1)
    out_test: list[float]
    kappa: list[float | None]


class PredictorMeasurement(BaseModel):
    """One predictor's numbers from one measurement (docs/THEORY.md §5).

    The headline fields are typed; the measurement's other scores (`exact_*`, `regression_*_ci`,
    agreement rates, `linearized`, timings) are kept as they come (`extra="allow"`).
    """

    model_config = ConfigDict(extra="allow")

    undefined: str | None = None  # why the predictor does not describe this network; then no numbers
    spectral_out_test_acc: float | None = Field(default=None, ge=0, le=1)  # the spectral rule (Eq. 7)
    spectral_out_test_ci: list[float] | None = None
    kappa: float | None = Field(default=None, ge=-1, le=1)  # of the spectral rule's right/wrong calls
    spearman: float | None = None
    regression_out_test_acc: float | None = Field(default=None, ge=0, le=1)  # kernel regression
    regression_in_test_acc: float | None = Field(default=None, ge=0, le=1)
    regression_kappa: float | None = Field(default=None, ge=-1, le=1)
    # kernel regression at scale (docs/THEORY.md §10), measured at the end of training; absent in older records
    scale_out_test_acc: float | None = Field(default=None, ge=0, le=1)
    scale_out_test_ci: list[float] | None = None
    scale_in_test_acc: float | None = Field(default=None, ge=0, le=1)
    scale_kappa: float | None = Field(default=None, ge=-1, le=1)
    scale_kappa_ci: list[float] | None = None  # seeded bootstrap over out-test digits
    regression_m: int | None = Field(default=None, ge=1)  # training points of the largest regression
    regression_curve: list[CurvePoint] | None = None  # nested sizes, ascending m
    scale_spread: ScaleSpread | None = None  # two independent draws

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> dict[str, Any]:
        """Written as measured: a headline field the measurement did not produce is left out, not null."""
        extra = self.model_extra or {}
        return {k: v for k, v in handler(self).items() if v is not None or k in extra}


class KernelPredictions(_Strict):
    """The kernel predictions of a run (the last measurement of `EmpiricalNTKCallback`)."""

    probe: dict[str, Any]  # what the probe holds (`orbitbench.theory.probe.ProbeSet.describe`)
    network: dict[str, Any]  # the network's own accuracies on the probe
    predictors: dict[str, PredictorMeasurement]  # registered predictor name -> its numbers
    step: int = Field(default=0, ge=0)
    epoch: int = Field(default=0, ge=0)


LEGACY_PREDICTIONS_KEY = "EmpiricalNTKCallback"  # schema 1 kept the predictions under the callback's class name
LEGACY_DATA_NAMES = {"seeds_per_class": "images_per_class"}  # DataModule arguments renamed since schema 1


class RunRecord(_Strict):
    """What one run trained on what, what it measured, and what produced it."""

    schema_version: Literal[2] = 2
    stage: Literal["fit", "validate", "test"]
    model: ModelSettings
    data: DataSettings
    seeds: Seeds
    metrics: Metrics
    predictions: KernelPredictions | None = None
    callbacks: dict[str, dict[str, Any]] = {}
    epochs: int = Field(ge=0)
    global_step: int = Field(ge=0)
    log_dir: str | None
    last_checkpoint: str | None
    wall_time_s: float = Field(ge=0)
    versions: dict[str, str]
    git_commit: str | None
    finished: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_schema_1(cls, data: Any) -> Any:
        """Schema 1: the predictions move out of `callbacks` (they were kept under the callback's class
        name) and the DataModule's `seeds_per_class` is read as its new name, `images_per_class`."""
        if not isinstance(data, dict):
            return data
        if data.get("schema_version", 1 if "predictions" not in data else 2) == 1:
            callbacks = dict(data.get("callbacks") or {})
            legacy = callbacks.pop(LEGACY_PREDICTIONS_KEY, None)
            data = {**data, "schema_version": 2, "callbacks": callbacks, "predictions": legacy or None}
        settings = data.get("data")
        if isinstance(settings, dict) and isinstance(settings.get("hparams"), dict):
            hparams = {LEGACY_DATA_NAMES.get(k, k): v for k, v in settings["hparams"].items()}
            data = {**data, "data": {**settings, "hparams": hparams}}
        return data


def load_record(path: str | Path) -> RunRecord:
    """Read a run's `record.json` (or the run dir holding it); one OrbitbenchError line if unusable."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    if not path.is_file():
        raise OrbitbenchError(f"{path}: no run record (the run did not finish, or this is not a run's log dir)")
    try:
        record = RunRecord.model_validate_json(read_text_file(path, "run record"))
    except ValidationError as error:
        raise OrbitbenchError(one_line_validation_error(str(path), error)) from None
    from orbitbench.trust import check_run_settings

    check_run_settings(record.model, record.data, str(path))  # a record is data: the classes it names are checked
    return record
