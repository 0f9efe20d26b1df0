"""The run record (`orbitbench/run/record.py`): what it names, and every unusable file is one clear line."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from orbitbench.errors import OrbitbenchError
from orbitbench.run.record import DataSettings, Metrics, ModelSettings, RunRecord, Seeds, load_record


def _record() -> RunRecord:
    return RunRecord(
        stage="fit", model=ModelSettings(backbone="paper_mlp", n_params=468_096),
        data=DataSettings(datamodule="RotatedMNIST", n_poses=4, hparams={"leave_out_class": 3}),
        seeds=Seeds(seed_everything=0, data_split_seed=0), metrics=Metrics(in_test_acc=0.9, out_test_acc=0.1),
        epochs=1, global_step=10, log_dir=None, last_checkpoint=None, wall_time_s=1.0, versions={}, git_commit=None,
        finished=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda text: None, "no run record"),
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: text.replace('"stage": "fit"', '"stage": "train"'), "stage: Input should be 'fit', 'validate' or 'test'"),
        (lambda text: text.replace('"out_test_acc": ', '"out_test_acc": 2.0, "x": '), "metrics.out_test_acc"),
        (lambda text: text.replace('"n_params"', '"params"'), "model.n_params: Field required"),
    ],
    ids=["missing", "truncated", "bad stage", "accuracy above 1", "renamed field"],
)
def test_an_unusable_record_is_one_clear_line(tmp_path, edit, fragment) -> None:
    text = _record().model_dump_json(indent=2)
    path = tmp_path / "record.json"
    edited = edit(text)
    if edited is not None:
        path.write_text(edited)
    with pytest.raises(OrbitbenchError) as caught:
        load_record(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


def test_the_datamodule_is_named_so_that_it_can_be_imported_again(monkeypatch) -> None:
    """`RotatedMNIST` for the package's own classes (as every existing record), the import path
    for any other: `datamodule_class` reads both back."""
    monkeypatch.setenv("ORBITBENCH_TRUSTED_PACKAGES", "sweep_helpers")  # the user's own package, trusted the documented way
    from sweep_helpers import FlippedMNIST

    from orbitbench.datamodules import RotatedMNIST, datamodule_class, datamodule_name

    assert datamodule_name(RotatedMNIST) == "RotatedMNIST"
    assert datamodule_name(FlippedMNIST) == "sweep_helpers.FlippedMNIST"
    assert datamodule_class(datamodule_name(FlippedMNIST)) is FlippedMNIST
    assert datamodule_class(datamodule_name(RotatedMNIST)) is RotatedMNIST


def test_schema_1_records_load_with_their_predictions_typed(tmp_path) -> None:
    """A record written before the predictions were typed (schema 1: under the callback's class
    name in `callbacks`) loads as schema 2 with `predictions` filled; the other callbacks stay."""
    legacy = _record().model_dump(mode="json")
    legacy.pop("predictions")
    legacy["schema_version"] = 1
    measured = {"spectral_out_test_acc": 0.25, "kappa": 0.1, "exact_out_test_acc": 0.5}
    legacy["callbacks"] = {"EmpiricalNTKCallback": {"probe": {"n_seeds": 4}, "network": {"out_test_acc": 0.5},
                                                    "predictors": {"init": measured, "infinite": {"undefined": "no twin"}},
                                                    "step": 3, "epoch": 1},
                           "MyCallback": {"x": 1}}  # fmt: skip
    path = tmp_path / "record.json"
    path.write_text(json.dumps(legacy))
    record = load_record(path)
    assert record.schema_version == 2 and record.callbacks == {"MyCallback": {"x": 1}}
    init = record.predictions.predictors["init"]
    assert (init.spectral_out_test_acc, init.kappa, init.model_extra["exact_out_test_acc"]) == (0.25, 0.1, 0.5)
    assert record.predictions.predictors["infinite"].undefined == "no twin" and record.predictions.step == 3
    from orbitbench.theory.registry import recorded_predictions

    assert recorded_predictions(record)["init"] == {"out_test": 0.25, "kappa": 0.1}
    assert recorded_predictions(_record())["init"] == {"out_test": None, "kappa": None}


def test_a_predicted_accuracy_outside_0_1_is_refused(tmp_path) -> None:
    record = _record().model_dump(mode="json")
    record["predictions"] = {"probe": {}, "network": {}, "predictors": {"init": {"spectral_out_test_acc": 1.5}}}
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    with pytest.raises(OrbitbenchError, match=r"predictions\.predictors\.init\.spectral_out_test_acc"):
        load_record(path)
