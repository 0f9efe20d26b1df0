"""The speed settings that change last bits (benchmarks/RESULTS.md, issue 35 item 3) are off by default
and do what they say when on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from orbitbench.errors import OrbitbenchError
from orbitbench.models import create_model
from orbitbench.models.paper import UniformDropout
from orbitbench.run.module import OrbitClassifier


def test_defaults_keep_the_seeded_entries_settings() -> None:
    net = create_model("paper_mlp")
    assert [type(m) for m in net if isinstance(m, nn.Dropout)] == [nn.Dropout, nn.Dropout]
    assert OrbitClassifier().hparams.train_eval_autocast is False


def test_uniform_dropout_keeps_the_distribution_and_is_off_in_eval_mode() -> None:
    net = create_model("paper_mlp", dropout_mask="uniform")
    drop = net[3]
    assert isinstance(drop, UniformDropout)
    torch.manual_seed(0)
    out = drop(torch.ones(400, 512))
    assert set(out.unique().tolist()) == {0.0, 2.0} and abs(float((out > 0).float().mean()) - 0.5) < 0.01
    drop.eval()
    x = torch.randn(3, 512)
    assert drop(x) is x
    with pytest.raises(OrbitbenchError, match="dropout_mask='fast'"):
        create_model("paper_mlp", dropout_mask="fast")
