"""`ReseedEachStep`: every RNG seeded from (seed, step), so a resumed run repeats an unbroken one."""

from __future__ import annotations

import os
import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


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
        # torch.manual_seed would also queue lazy seeding of every accelerator backend (CUDA, XPU,
        # MTIA: a stack capture and a driver query each), per step; seed only what this run uses.
        torch.default_generator.manual_seed(seed)
        if pl_module.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)
        np.random.seed(seed)
        random.seed(seed)
