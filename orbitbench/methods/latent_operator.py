"""`latent_operator`: a latent code on which the group generator acts by a fixed Fourier operator.

Autoencoders with transformation operators in latent space (Connor & Rozell 2020; Dupont et al.
2020; Keller & Welling 2021) learn a code in which transforming the input is a known (or learnt)
linear map of the code. Here the code is m planes (m complex numbers); the generator of C_n
(pose k -> k+1) rotates plane i by 2*pi*f_i/n, with fixed frequencies f_i = 1, 2, ..., n/2
repeated: the shift operator of C_n in its Fourier basis. Training pairs (pose p, pose p + j) of
one training image must satisfy code(p + j) = R^j code(p). The classifier reads each plane's
modulus, which R leaves unchanged: a function of the code that is invariant along the
operator's orbit, so whatever the encoder learns to make equivariant is invariant to the
classifier. No decoder: the labels, not a reconstruction, keep the code informative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.methods._base import Method, MethodInfo, StepOutput, number_setting, register_method


class _ReadoutInput(nn.Module):
    """Stands in for the backbone's read-out: keeps its input, returns zeros of the read-out's shape."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features
        self.latest: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.latest = x
        return x.new_zeros(*x.shape[:-1], self.out_features)


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise OrbitbenchError(f"{type(root).__name__}: its declared read-out is not one of its submodules")


class LatentOperatorNet(nn.Module):
    """images -> backbone features [B, D] -> code [B, m, 2] -> plane moduli [B, m] -> LayerNorm -> logits [B, classes].

    The backbone's own read-out is removed (its input is the feature); `encode` gives the code.
    """

    def __init__(self, backbone: nn.Module, readout: nn.Module, planes: int, num_classes: int) -> None:
        super().__init__()
        if not isinstance(readout, nn.Linear):
            raise OrbitbenchError(f"latent_operator: the backbone's read-out is a {type(readout).__name__}, not nn.Linear")
        self.features = _ReadoutInput(readout.out_features)
        _replace(backbone, readout, self.features)
        self.backbone = backbone
        self.encoder = nn.Linear(readout.in_features, 2 * planes)
        # The moduli of unit-norm images' codes start near 0.1: normalising them (per image, so still
        # a function of the moduli only) lets the classifier learn as fast as a plain read-out.
        self.norm = nn.LayerNorm(planes)
        self.classifier = nn.Linear(planes, num_classes)

    def encode(self, images: Tensor) -> Tensor:
        self.backbone(images)
        rows = self.features.latest.flatten(1)  # [k*B, D]; k > 1 for wrappers such as c4_pooled
        self.features.latest = None  # no graph kept on the module (it stays deep-copyable)
        features = rows.reshape(-1, images.shape[0], rows.shape[1]).mean(dim=0)  # [B, D]
        return self.encoder(features).unflatten(1, (-1, 2))  # [B, m, 2]

    def classify(self, code: Tensor) -> Tensor:
        modulus = torch.sqrt(code.pow(2).sum(dim=2) + 1e-8)  # [B, m]; eps keeps the gradient finite at 0
        return self.classifier(self.norm(modulus))

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.encode(images))


def plane_frequencies(planes: int, n_poses: int) -> Tensor:
    """f_i = 1, 2, ..., n/2, 1, 2, ...: every non-trivial frequency of C_n, none invariant."""
    top = max(1, n_poses // 2)
    return torch.arange(planes) % top + 1


def rotate_planes(code: Tensor, angle: Tensor) -> Tensor:
    """Rotate each plane of code [B, m, 2] by angle [B, m]."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = code[..., 0], code[..., 1]
    return torch.stack((cos * x - sin * y, sin * x + cos * y), dim=-1)


@register_method("latent_operator")
class LatentOperator(Method):
    """Cross-entropy on the code's moduli + `weight` x ||R^j code(p) - code(p + j)||^2 on training pairs.

    Args:
        planes: number of 2-D planes of the code (code size 2 * planes).
        weight: factor of the operator loss (relative squared error).
    """

    info = MethodInfo(
        idea="latent transformation operator (Connor & Rozell 2020; Keller & Welling 2021): fixed C_n "
        "Fourier shift on a learnt code, classifier on its invariant moduli",
        kernel_prediction="trained kernel only: the empirical NTK of net's logits after training",
        kernel_note="the operator loss moves the weights away from kernel regression on the labels",
        uses_pose_pairs=True,
        kernel_predictors=("trained",),
    )

    def __init__(self, planes: int = 32, weight: float = 1.0) -> None:
        super().__init__()
        self.planes = int(number_setting("latent_operator", "planes", planes, 1, integer=True))
        self.weight = number_setting("latent_operator", "weight", weight, 0.0)

    needs_readout = True

    def attach(self, net: nn.Module, num_classes: int, readout: nn.Module | None = None) -> nn.Module:
        return LatentOperatorNet(net, readout, self.planes, num_classes)

    def training_step(self, net, batch, views) -> StepOutput:
        if views is None:
            raise OrbitbenchError("latent_operator needs a DataModule with pose pairs (partner_poses, materialize)")
        n = views.n_poses
        partner = views.partners(batch.image_index, batch.pose)  # [B]
        size = batch.label.shape[0]
        code = net.encode(torch.cat([batch.image, views.images(batch.image_index, partner)]))  # [2B, m, 2]
        code, partner_code = code[:size], code[size:]
        logits = net.classify(code)
        steps = (partner - batch.pose).remainder(n).to(code.dtype)  # j, the group element between the two poses
        angle = 2 * math.pi / n * steps[:, None] * plane_frequencies(self.planes, n).to(code)[None, :]  # [B, m]
        error = (rotate_planes(code, angle) - partner_code).pow(2).sum(dim=(1, 2)).mean()
        # Relative error, scale included in the gradient: with a detached scale the cheapest way
        # down is to shrink the whole code, which starves the classifier (measured: chance accuracy).
        scale = 0.5 * (code.pow(2).sum(dim=(1, 2)) + partner_code.pow(2).sum(dim=(1, 2))).mean() + 1e-8
        operator = error / scale
        supervised = F.cross_entropy(logits, batch.label)
        loss = supervised + self.weight * operator
        return StepOutput(loss, logits, {"ce": supervised.detach(), "operator": operator.detach()})
