"""How far to trust a predicted accuracy, and whether a predictor knows *which* samples fail.

Accuracy alone cannot tell a predictor that tracks the network from a constant one: on a probe
where the network fails everywhere, "always wrong" agrees perfectly. So next to each accuracy go
a 95% Wilson interval, per-sample agreement with the agreement two independent predictors of the
same rates would reach by chance, Cohen's kappa (0 = no more than chance, whatever the rates) and
Spearman's rank correlation of the two margins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from torch import Tensor

from orbitbench.stats import wilson_interval

__all__ = ["Agreement", "agreement", "kappa_interval", "wilson_interval"]

@dataclass(frozen=True)
class Agreement:
    """Per-sample agreement of a predictor's correct / wrong calls with the network's."""

    agreement: float  # fraction of samples where both are right or both wrong
    chance_agreement: float  # p q + (1 - p) (1 - q) for rates p, q: what independence gives
    kappa: float  # (agreement - chance) / (1 - chance); 0 when chance = 1 (nothing varies: no information)
    spearman: float  # rank correlation of the margins; NaN when either is constant

    def as_dict(self, prefix: str = "") -> dict[str, float | None]:
        return {f"{prefix}{k}": (None if math.isnan(v) else v) for k, v in vars(self).items()}


def agreement(predicted: Tensor, network: Tensor, predicted_margin: Tensor, network_margin: Tensor) -> Agreement:
    """predicted, network: bool [n] (sample classified correctly); margins: float [n], > 0 where correct."""
    p = predicted.double().flatten().numpy()
    q = network.double().flatten().numpy()
    if p.size == 0:
        return Agreement(math.nan, math.nan, math.nan, math.nan)
    observed = float(np.mean(p == q))
    chance = float(p.mean() * q.mean() + (1 - p.mean()) * (1 - q.mean()))
    kappa = 0.0 if chance >= 1.0 else (observed - chance) / (1.0 - chance)
    a, b = predicted_margin.double().flatten().numpy(), network_margin.double().flatten().numpy()
    constant = a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0
    spearman = math.nan if constant else float(stats.spearmanr(a, b).statistic)
    return Agreement(observed, chance, kappa, spearman)


def kappa_interval(predicted: Tensor, network: Tensor, rounds: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Cohen's kappa over samples (resampled with replacement, seeded)."""
    p = predicted.double().flatten().numpy()
    q = network.double().flatten().numpy()
    if p.size == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, p.size, size=(rounds, p.size))  # [rounds, n]
    pp, qq = p[idx], q[idx]
    observed = (pp == qq).mean(1)
    pm, qm = pp.mean(1), qq.mean(1)
    chance = pm * qm + (1 - pm) * (1 - qm)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(chance >= 1.0, 0.0, (observed - chance) / (1.0 - chance))
    tail = (1 - level) / 2 * 100
    return float(np.percentile(kappa, tail)), float(np.percentile(kappa, 100 - tail))
