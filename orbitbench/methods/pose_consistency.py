"""`pose_consistency`: a joint-embedding term that pulls two poses of one training image together.

Self-supervised joint embeddings (SimCLR, Chen et al. 2020; Barlow Twins, Zbontar et al. 2021;
see Geiping et al. 2023) feed two transformed views of an image through the same network and
match their representations. Here the views are two poses of one training image, both from the
training split (`OrbitDataModule.partner_poses`), and the term is added to the supervised loss.

Which objective, and why: InfoNCE / NT-Xent (SimCLR) on the cosine similarity of the read-out's
input (`FeatureTap`). The negatives (other images of the batch) keep the embedding from
collapsing without the extra variance/covariance weights of VICReg or the large batches Barlow
Twins needs to estimate a cross-correlation matrix; and it acts on the very features the linear
read-out classifies, so invariance learnt there is invariance of the classifier's input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orbitbench.errors import OrbitbenchError
from orbitbench.methods._base import Method, MethodInfo, StepOutput, number_setting, register_method
from orbitbench.methods._features import FeatureTap


def info_nce(first: Tensor, second: Tensor, image_index: Tensor, temperature: float) -> Tensor:
    """Symmetric NT-Xent between matched rows of [B, D] embeddings; rows of one image are not negatives."""
    first, second = F.normalize(first, dim=1), F.normalize(second, dim=1)
    similarity = first @ second.T / temperature  # [B, B]; the diagonal holds the positive pairs
    same_image = image_index[:, None] == image_index[None, :]
    same_image.fill_diagonal_(False)
    similarity = similarity.masked_fill(same_image, float("-inf"))
    target = torch.arange(first.shape[0], device=first.device)
    return 0.5 * (F.cross_entropy(similarity, target) + F.cross_entropy(similarity.T, target))


@register_method("pose_consistency")
class PoseConsistency(Method):
    """Cross-entropy on the batch + `weight` x InfoNCE between each image's pose and a partner pose.

    Args:
        weight: factor of the joint-embedding term (0 leaves cross-entropy alone, though not bit for
            bit `supervised`: the partner views share the forward pass and its dropout masks).
        temperature: InfoNCE temperature on cosine similarities.
    """

    info = MethodInfo(
        idea="joint-embedding SSL between two poses of a training image (InfoNCE as in SimCLR, Chen et al. 2020)",
        kernel_prediction="trained kernel only: the empirical NTK of net's logits after training",
        kernel_note="the extra loss moves the weights away from kernel regression on the labels, so the "
        "kernel-at-init prediction is supervised's and does not describe this method",
        uses_pose_pairs=True,
        kernel_predictors=("trained",),
    )

    def __init__(self, weight: float = 1.0, temperature: float = 0.2) -> None:
        super().__init__()
        self.weight = number_setting("pose_consistency", "weight", weight, 0.0)
        self.temperature = number_setting("pose_consistency", "temperature", temperature, 0.0, strict=True)
        self._tap: FeatureTap | None = None

    needs_readout = True

    def attach(self, net: nn.Module, num_classes: int, readout: nn.Module | None = None) -> nn.Module:
        self._tap = FeatureTap(net, readout)
        return net

    def training_step(self, net, batch, views) -> StepOutput:
        if views is None:
            raise OrbitbenchError("pose_consistency needs a DataModule with pose pairs (partner_poses, materialize)")
        partner = views.partners(batch.image_index, batch.pose)  # [B]
        both = torch.cat([batch.image, views.images(batch.image_index, partner)])  # [2B, 1, 28, 28]
        size = batch.label.shape[0]
        all_logits, features = self._tap(both)  # [2B, classes], [2B, D]
        logits = all_logits[:size]
        supervised = F.cross_entropy(logits, batch.label)
        consistency = info_nce(features[:size], features[size:], batch.image_index, self.temperature)
        loss = supervised + self.weight * consistency
        return StepOutput(loss, logits, {"ce": supervised.detach(), "pose_consistency": consistency.detach()})
