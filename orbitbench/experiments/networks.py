"""Trained networks on exactly the data of the multiclass kernel experiment (paper Fig. 6B).

The kernel side draws S seed digits per class with `pairs.class_orbits(seed)`, poses them with
the rotation group and puts every pose on the unit sphere after the action; it predicts pose 0 of
each orbit of the leave-out class from every other point. `training_datamodule` builds the
RotatedMNIST of the normal fit path with the same draw (`seeds_per_class`, `seed`), the same
interpolation and normalisation, pose 0 of the leave-out class as out-test and no in-test split,
so the network trains on the kernel side's points. `fit_out_test_accuracy` trains a zoo model on it
the way `orbitbench fit` does (OrbitClassifier, seeded deterministic Lightning Trainer, reseeding
every step), under one of the `PROTOCOLS` (docs/THEORY.md §8): orbitbench's step budget, or the
authors' Fig. 6B schedule.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch

from orbitbench.datamodules import RotatedMNIST
from orbitbench.splits import split_accuracy

@dataclass(frozen=True)
class TrainingProtocol:
    """How the networks of `theory multiclass --train` are trained (docs/THEORY.md §8).

    `steps` (a fixed optimiser-step budget) or `epochs` (full passes; the train loader keeps its
    last, short batch, so an epoch has `len // batch_size + 1` batches unless batch_size divides
    len). `backbone_kwargs` apply to the models named in them. `redraw`: new seed digits for each
    n_angles (seed + n_angles), as the authors' script splits its key once per n_angles.
    """

    batch_size: int
    steps: int | None = None
    epochs: int | None = None
    backbone_kwargs: dict[str, dict] = field(default_factory=dict)
    redraw: bool = False

    def seed_for(self, seed: int, n_angles: int) -> int:
        return seed + n_angles if self.redraw else seed


PROTOCOLS = {
    # Enough steps of the paper's Adam to fit the train split; the same seed digits at every n.
    "orbitbench": TrainingProtocol(batch_size=64, steps=1000),
    # The authors' Fig. 6B script: their network in NTK parameterisation, Adam lr 1e-3 betas (0.7, 0.9)
    # (OrbitClassifier's default), batch 512, 2,000 epochs, seed digits redrawn for each n_angles.
    "authors": TrainingProtocol(batch_size=512, epochs=2000, backbone_kwargs={"paper_mlp": {"parameterization": "ntk"}},
                                redraw=True),
}

# round(fraction * pairs) = 0 for any dataset smaller than 10^9 (image, pose) pairs: no in-test.
NO_IN_TEST = 1e-9


def training_datamodule(
    n_angles: int, leave_out_class: int, seeds_per_class: int, seed: int, interpolation: str, source: str,
    data_dir: str, batch_size: int,
) -> RotatedMNIST:
    """The kernel side's points as a RotatedMNIST: pose 0 of `leave_out_class` is out-test, the rest train."""
    return RotatedMNIST(
        n_angles=n_angles, interpolation=interpolation, leave_out_class=leave_out_class, held_out_poses=(0,),
        in_test_fraction=NO_IN_TEST, source=source, data_dir=data_dir, images_per_class=seeds_per_class,
        normalize="sphere", batch_size=batch_size, seed=seed,
    )


def _accelerator(device: str) -> dict:
    parsed = torch.device(device)
    if parsed.type == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    return {"accelerator": "gpu", "devices": [parsed.index or 0]}


def fit_out_test_accuracy(model: str, datamodule: RotatedMNIST, protocol: TrainingProtocol, seed: int,
                          device: str) -> dict[str, float]:
    """Train zoo `model` on `datamodule` for the protocol's steps or epochs; accuracy (eval mode) on
    its out-test (held-out poses) and train splits."""
    import lightning as L

    from orbitbench.run.module import OrbitClassifier
    from orbitbench.run.callbacks.reseed import ReseedEachStep

    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few-worker loaders, no validation: intended here
            L.seed_everything(seed, workers=True, verbose=False)
            classifier = OrbitClassifier(backbone=model, backbone_kwargs=protocol.backbone_kwargs.get(model))
            budget = {"max_steps": protocol.steps, "max_epochs": -1} if protocol.steps else {"max_epochs": protocol.epochs}
            trainer = L.Trainer(
                **budget, deterministic=True, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                callbacks=[ReseedEachStep()], **_accelerator(device),
            )
            trainer.fit(classifier, datamodule=datamodule)
    finally:
        quiet.setLevel(level)
    classifier.to(device)
    return {split: split_accuracy(classifier, datamodule, split, device) for split in ("out_test", "train")}
