"""`supervised`: cross-entropy on the labels of the training poses, nothing else (paper Fig. 1).

The reference every challenger is compared with: the network's kernel is fixed by its
architecture, and the paper shows it does not carry a symmetry seen on some classes to a class
seen only partly (docs/THEORY.md §2-3).
"""

from __future__ import annotations

import torch.nn.functional as F

from orbitbench.methods._base import Method, MethodInfo, StepOutput, register_method


@register_method("supervised")
class Supervised(Method):
    """Cross-entropy on `net(images)`: exactly the loss the benchmark trained before methods existed."""

    info = MethodInfo(
        idea="supervised cross-entropy (Perin & Deny 2024, Fig. 1)",
        kernel_prediction="kernel regression with the empirical NTK of net's logits (docs/THEORY.md §2-3)",
    )

    def training_step(self, net, batch, views) -> StepOutput:
        logits = net(batch.image)
        return StepOutput(F.cross_entropy(logits, batch.label), logits, {})
