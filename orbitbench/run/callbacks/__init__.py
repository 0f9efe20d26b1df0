"""Every callback of the Lightning run, one file each; the always-on ones are listed in `ALWAYS_ON`.

`--trainer.callbacks+=orbitbench.run.callbacks.EmpiricalNTKCallback` adds the kernel predictions.
"""

from orbitbench.run.callbacks.hparams import HParamsSession
from orbitbench.run.callbacks.kernel_predictions import EmpiricalNTKCallback, undefined_predictors
from orbitbench.run.callbacks.orbit_grid import TrainOrbitGrid
from orbitbench.run.callbacks.prediction_writer import PredictionWriter
from orbitbench.run.callbacks.progress import PlainProgress
from orbitbench.run.callbacks.record_writer import RunRecordWriter
from orbitbench.run.callbacks.reseed import ReseedEachStep

__all__ = ["EmpiricalNTKCallback", "HParamsSession", "PlainProgress", "PredictionWriter", "ReseedEachStep",
           "RunRecordWriter", "TrainOrbitGrid", "undefined_predictors"]
