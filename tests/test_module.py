"""OrbitClassifier's fast CPU setting: channels_last weights, bf16 autocast, on real posed digits."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from orbitbench.datamodules import RotatedMNIST
from orbitbench.run.module import OrbitClassifier

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def posed_batch():
    dm = RotatedMNIST(n_angles=8, source="mnist5k", images_per_class=20, batch_size=64, seed=125)
    dm.setup("fit")
    return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


def conv_weights(module: OrbitClassifier) -> list[torch.Tensor]:
    return [m.weight for m in module.net.modules() if isinstance(m, nn.Conv2d)]


def test_channels_last_stores_conv_weights_nhwc_and_computes_the_same_logits(posed_batch, one_thread):
    L.seed_everything(3, verbose=False)
    plain = OrbitClassifier("paper_convnet")
    L.seed_everything(3, verbose=False)
    fast = OrbitClassifier("paper_convnet", channels_last=True)
    weights = conv_weights(fast)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(plain))
    plain.eval(), fast.eval()
    with torch.no_grad():  # same parameters, another memory layout: float32 rounding only
        torch.testing.assert_close(fast(posed_batch.image), plain(posed_batch.image), rtol=1e-4, atol=1e-4)


def test_channels_last_is_a_no_op_without_convolutions(one_thread):
    L.seed_everything(3, verbose=False)
    plain = OrbitClassifier("paper_mlp")
    L.seed_everything(3, verbose=False)
    fast = OrbitClassifier("paper_mlp", channels_last=True)
    for a, b in zip(plain.net.parameters(), fast.net.parameters(), strict=True):
        assert a.stride() == b.stride() and torch.equal(a, b)


def test_bf16_autocast_step_lowers_the_loss_like_float32(posed_batch, one_thread):
    """Thirty Adam steps on one batch under bf16 autocast reduce the loss as float32 steps do."""
    losses = {}
    for bf16 in (False, True):
        L.seed_everything(3, verbose=False)
        module = OrbitClassifier("paper_convnet", channels_last=bf16)
        optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
        history = []
        for _ in range(30):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(module(posed_batch.image), posed_batch.label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        losses[bf16] = history
    for history in losses.values():
        assert history[-1] < 0.9 * history[0], history
    assert abs(losses[True][-1] - losses[False][-1]) < 0.1 * losses[False][0]
