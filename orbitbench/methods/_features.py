"""The representation a method reads from a zoo backbone: the input of its read-out.

Every model declares its read-out (`ModelInfo.classifier`, timm's `classifier`: paper models,
mlp, cnn_*, timm heads, SimpleViT's head, steerable_cnn), so "what the read-out sees" needs no
per-model code and no guess. A forward hook records it during the ordinary forward pass: one call gives both the logits and
the features, and the network itself stays an unchanged `images -> logits` module (what the
empirical-NTK callback differentiates).
"""

from __future__ import annotations

from einops import reduce
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError


class FeatureTap:
    """Runs `net` and returns its logits together with the input of its read-out.

    Use: `tap = FeatureTap(net, readout)` (`readout`: a submodule of `net`), then `logits, features = tap(images)`: [B, classes], [B, D].
    The hook keeps nothing outside such a call, so other users of `net` (evaluation, the
    empirical-NTK callback's functional transforms) are untouched. A wrapper that runs its
    backbone on k poses at once (`c4_pooled`: rows ordered (pose, image)) gives [k*B, D]; the k
    rows of an image are averaged, as the wrapper averages their logits.
    """

    def __init__(self, net: nn.Module, readout: nn.Module) -> None:
        self.net = net
        self._latest: Tensor | None = None
        self._active = False
        readout.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if self._active:
            self._latest = inputs[0]

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        self._active, self._latest = True, None
        try:
            logits = self.net(images)
            latest = self._latest
        finally:
            self._active, self._latest = False, None
        if latest is None:
            raise OrbitbenchError(f"{type(self.net).__name__}: its read-out did not run in the forward pass")
        flat = latest.flatten(1)  # [k*B, D]
        if flat.shape[0] % images.shape[0]:
            raise OrbitbenchError(f"read-out saw {flat.shape[0]} rows for a batch of {images.shape[0]} images")
        return logits, reduce(flat, "(k b) d -> b d", "mean", b=images.shape[0])  # [B, D]
