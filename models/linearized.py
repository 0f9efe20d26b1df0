"""`linearized(<name>)`: a backbone's first-order Taylor model around its initial weights.

    f_lin(x; w) = f(x; w0) + J(x; w0) (w - w0)

The kernel theory (docs/THEORY.md §9) describes this model, not the network: its NTK is the
network's empirical NTK at initialisation and never moves. Training it with the network's own
optimiser, loss, batches and budget separates what feature learning changes from what the
optimiser, loss and budget change.

How: the backbone's parameters become buffers holding `w0` (they travel with every checkpoint);
the trained parameters `w` live in `weights` (one per backbone parameter, `.` written `/`) and start
equal to `w0`, so the model starts as the network. One `torch.func.jvp` through `functional_call`
gives `f(x; w0)` and the tangent `J(x; w0)(w - w0)` in one pass; gradients reach `w` through the
tangent. In train mode the jvp runs through the train-mode forward: each dropout mask applies to
both the primal and the tangent (the linearisation of the network with that step's masks, the
masks drawn exactly as the network draws them). BatchNorm with running statistics is refused (it
updates buffers in place, which has no linearisation around fixed weights).

The declared read-out of the backbone (`ModelInfo.classifier`) becomes `features`: a pass-through
called with the *linearised* input of the backbone's read-out, `phi(x; w0) + J_phi(x; w0)(w - w0)`,
so `FeatureTap` (pose_consistency) reads the linearised representation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from orbitbench.errors import OrbitbenchError


class LinearizedFeatures(nn.Module):
    """The linearised input of the backbone's read-out passes through here (what `FeatureTap` hooks)."""

    def forward(self, features: Tensor) -> Tensor:
        return features


def _key(name: str) -> str:
    return name.replace(".", "/")  # ParameterDict keys may not contain "."


class Linearized(nn.Module):
    """`f(x; w0) + J(x; w0)(w - w0)` for a backbone built at `w0`; trainable: `weights` (= w)."""

    def __init__(self, backbone: nn.Module, readout: nn.Module | None = None, name: str = "linearized",
                 example: Tensor | None = None) -> None:
        super().__init__()
        stateful = sorted({type(m).__name__ for m in backbone.modules()
                           if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats})
        if stateful:
            raise OrbitbenchError(f"{name}: {', '.join(stateful)} layers update running statistics in place while "
                                  "training, which has no linearisation around fixed weights; choose a model without "
                                  "BatchNorm (or with track_running_stats=False)")  # fmt: skip
        names = [n for n, p in backbone.named_parameters() if p.requires_grad]  # shared parameters once
        if not names:
            raise OrbitbenchError(f"{name}: the backbone has no trainable parameters to linearise")
        self.weights = nn.ParameterDict({_key(n): nn.Parameter(backbone.get_parameter(n).detach().clone()) for n in names})
        _parameters_to_buffers(backbone)
        self.backbone = backbone
        self._names = names
        self.features = LinearizedFeatures() if readout is not None else None
        self._captured: list[Tensor] | None = None  # the read-out's input during one jvp, else None
        if readout is not None:
            readout.register_forward_hook(self._capture)
        self._check(name, torch.zeros(2, 1, 28, 28) if example is None else example)  # the zoo's input by default

    def _capture(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if self._captured is not None:
            self._captured.append(inputs[0])

    def forward(self, x: Tensor) -> Tensor:
        w0 = {n: self.backbone.get_buffer(n) for n in self._names}
        step = {n: self.weights[_key(n)] - w0[n] for n in self._names}

        def network(params: dict[str, Tensor]) -> tuple[Tensor, ...]:
            self._captured = [] if self.features is not None else None
            try:
                logits = functional_call(self.backbone, params, (x,))
                if self._captured is None:
                    return (logits,)
                if len(self._captured) != 1:
                    raise OrbitbenchError(f"linearized: the read-out ran {len(self._captured)} times in one forward pass")
                return logits, self._captured[0]
            finally:
                self._captured = None

        primal, tangent = jvp(network, (w0,), (step,))
        if self.features is not None:
            self.features(primal[1] + tangent[1])  # [k*B, D]: the linearised read-out input, for FeatureTap
        return primal[0] + tangent[0]  # [B, classes]

    def tangent_network(self) -> nn.Module:
        """A copy of the backbone with `w0` as its parameters: its empirical NTK is this model's, at
        any `w` (J(x; w0) does not depend on w), and keeps the fast per-layer kernel path that the
        jvp forward pass would hide (tests/test_linearized.py checks the two kernels agree)."""
        network = copy.deepcopy(self.backbone, memo={id(self): self})  # the tap's hook refers to self: not copied
        for module in network.modules():  # this model's read-out tap stays off the copy
            for key, hook in list(module._forward_hooks.items()):
                if getattr(hook, "__self__", None) is self:
                    del module._forward_hooks[key]
        shared: dict[int, nn.Parameter] = {}
        for name in self._names:
            owner, _, attr = name.rpartition(".")
            module = network.get_submodule(owner)
            value = module._buffers.pop(attr)
            module.register_parameter(attr, shared.setdefault(id(value), nn.Parameter(value)))
        for module in network.modules():  # a shared w0 that was registered under several names
            for attr, value in list(module._buffers.items()):
                if value is not None and id(value) in shared:
                    del module._buffers[attr]
                    module.register_parameter(attr, shared[id(value)])
        return network

    def _check(self, name: str, example: Tensor) -> None:
        """One train-mode and one eval-mode pass on `example` inputs: what cannot be linearised
        fails here, in one line, not at the first training step. The random stream is not moved."""
        before = {n: b.clone() for n, b in self.backbone.named_buffers()}
        flags = [(m, m.training) for m in self.modules()]
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                for mode in (True, False):
                    self.train(mode)
                    self(example.to(next(iter(self.weights.values())).dtype))
        except OrbitbenchError:
            raise
        except Exception as error:  # noqa: BLE001 (any failure of the user's forward under torch.func)
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise OrbitbenchError(f"{name} cannot be linearised with torch.func.jvp: {type(error).__name__}: {first}") from None
        finally:
            for module, flag in flags:
                module.training = flag
        changed = [n for n, b in self.backbone.named_buffers() if not torch.equal(b, before[n])]
        if changed:
            raise OrbitbenchError(f"{name}: its forward pass changes buffers in place ({', '.join(changed[:3])}); "
                                  "a linearisation needs a forward that is a function of the weights and the input")


def _parameters_to_buffers(module: nn.Module) -> None:
    """Every parameter of `module` becomes a buffer of the same name holding its value (w0); a
    parameter shared by two modules becomes one buffer shared by both (functional_call ties them)."""
    buffers: dict[int, Tensor] = {}
    for sub in module.modules():
        for attr, param in list(sub._parameters.items()):
            if param is None:
                continue
            del sub._parameters[attr]
            sub.register_buffer(attr, buffers.setdefault(id(param), param.detach().clone()))
