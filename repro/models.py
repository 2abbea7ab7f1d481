"""Models and losses shared by every learning rule.

The MLP is a plain stack of ``nn.Linear`` layers with a hidden activation and an output activation.
Rules that do not use autograd call :meth:`MLP.forward_all` under ``torch.no_grad`` and use
:data:`ACTIVATIONS` for the local derivative (written in terms of the activation's output).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ConfigError(ValueError):
    """A bad parameter; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class Activation:
    fn: Callable[[torch.Tensor], torch.Tensor]
    # derivative as a function of (pre-activation z, output h); rules pass both
    grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(torch.tanh, lambda z, h: 1.0 - h * h),
    "relu": Activation(torch.relu, lambda z, h: (z > 0).to(h.dtype)),
    "sigmoid": Activation(torch.sigmoid, lambda z, h: h * (1.0 - h)),
    "identity": Activation(lambda z: z, lambda z, h: torch.ones_like(h)),
}


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


# ------------------------------------------------------------------------------------------- losses
# Each loss maps the output-layer pre-activation z [B, C] and float targets t [B, C] to the model
# output y, the batch-mean training loss and dL/dz, with PyTorch's exact semantics.
LOSSES = ("bce", "mse", "ce")
OUT_ACT = {"bce": "sigmoid", "mse": "identity", "ce": "identity"}


def output(loss: str, z: torch.Tensor) -> torch.Tensor:
    """The model output the paper calls y (sigmoid probabilities for BCE, logits for CE, z for MSE)."""
    return torch.sigmoid(z) if loss == "bce" else z


def prediction(loss: str, y: torch.Tensor) -> torch.Tensor:
    """What output errors are formed from: class probabilities (softmax of the logits for CE; the
    sigmoid outputs for BCE) or the regression values."""
    return torch.softmax(y, dim=1) if loss == "ce" else y


def loss_value(loss: str, y: torch.Tensor, t: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    if loss == "bce":
        return F.binary_cross_entropy(y, t, reduction=reduction)
    if loss == "mse":
        return F.mse_loss(y, t, reduction=reduction)
    if loss == "ce":
        return F.cross_entropy(y, t, reduction=reduction)
    raise ConfigError(f"loss={loss!r} is not allowed; choose one of: {', '.join(LOSSES)}")


def dloss_dy(loss: str, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """∂(batch-mean loss)/∂y, as autograd computes it (BCE clamps y(1−y) at 1e-12)."""
    n = y.numel()
    if loss == "bce":
        return (y - t) / torch.clamp(y * (1 - y), min=1e-12) / n
    if loss == "mse":
        return 2.0 * (y - t) / n
    if loss == "ce":
        return (torch.softmax(y, dim=1) - t) / y.shape[0]
    raise ConfigError(f"loss={loss!r} is not allowed; choose one of: {', '.join(LOSSES)}")


def dloss_dz(loss: str, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """∂(batch-mean loss)/∂z for the output pre-activation z (chain rule through the output activation)."""
    g = dloss_dy(loss, y, t)
    return g * (y * (1 - y)) if loss == "bce" else g


# -------------------------------------------------------------------------------------------- model
class MLP(nn.Module):
    """``sizes = [n_in, h_1, …, h_d, n_out]``; hidden activation ``act``; loss decides the output
    activation (sigmoid for BCE, identity otherwise). Default PyTorch init unless ``init`` says else."""

    def __init__(self, sizes: list[int], act: str = "tanh", loss: str = "bce", bias: bool = True,
                 init: str = "default"):
        super().__init__()
        if len(sizes) < 2 or any((not isinstance(s, int)) or s < 1 for s in sizes):
            raise ConfigError(f"sizes={sizes!r} must be a list of >= 2 positive integers")
        check_choice("act", act, ACTIVATIONS)
        check_choice("loss", loss, LOSSES)
        check_choice("init", init, ("default", "he_uniform", "orthogonal"))
        self.sizes, self.act_name, self.loss, self.init_name = list(sizes), act, loss, init
        self.hw = None  # a repro.quant.Hardware when the run simulates low-precision / analog hardware
        self.act = ACTIVATIONS[act]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))
        for lin in self.layers:
            if init == "he_uniform":
                bound = math.sqrt(6.0 / lin.in_features)
                nn.init.uniform_(lin.weight, -bound, bound)
            elif init == "orthogonal":
                nn.init.orthogonal_(lin.weight)
            if bias and init != "default":
                nn.init.zeros_(lin.bias)

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.layers) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model output y (sigmoid probabilities for BCE, logits for CE, values for MSE)."""
        if self.hw is not None:
            return self.forward_all(x)[1][-1]
        h = x
        for lin in self.layers[:-1]:
            h = self.act.fn(lin(h))
        return output(self.loss, self.layers[-1](h))

    def layer(self, i: int, h: torch.Tensor, mask: torch.Tensor | None = None):
        """Layer i on input h: (pre-activation z, output). Hidden layers: ``mask`` (consistent dropout)
        multiplies z, then the activation; the run's hardware model (read noise, activation rounding,
        rounded back-propagated errors) applies here. The last layer returns the model output."""
        lin, hw = self.layers[i], self.hw
        z = lin(h) if hw is None else torch.nn.functional.linear(h, hw.weight(lin.weight), lin.bias)
        if i == len(self.layers) - 1:
            return z, output(self.loss, z)
        if mask is not None:
            z = z * mask
        h = self.act.fn(z)
        if hw is not None:
            h = hw.act(h)
            if h.requires_grad and hw.cfg["signals"]:  # BP: round the back-propagated error
                h.register_hook(hw.signal)
        return z, h

    def forward_all(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None):
        """All pre-activations and activations: ``zs[i]``, ``hs[i+1]`` for layer i; ``hs[0] = x``.
        ``masks[i]`` (optional) multiplies hidden pre-activation i (consistent dropout)."""
        hs, zs = [x], []
        for i in range(len(self.layers)):
            z, h = self.layer(i, hs[-1], None if masks is None or i == len(self.layers) - 1 else masks[i])
            zs.append(z)
            hs.append(h)
        return zs, hs


def build_model(cfg: dict, n_in: int, n_out: int) -> MLP:
    """``cfg``: {arch: mlp, width, depth, act, loss, bias, init}; ``widths`` (a list of hidden widths),
    when given, replaces width × depth."""
    arch = cfg.get("arch", "mlp")
    check_choice("model.arch", arch, ("mlp",))
    if cfg.get("widths") is not None:
        ws = cfg["widths"]
        if not isinstance(ws, list) or any(not isinstance(w, int) or w < 1 for w in ws):
            raise ConfigError(f"model.widths={ws!r} must be a list of positive integers")
        return MLP([n_in] + ws + [n_out], act=cfg.get("act", "tanh"), loss=cfg.get("loss", "bce"),
                   bias=cfg.get("bias", True), init=cfg.get("init", "default"))
    width, depth = cfg.get("width", 500), cfg.get("depth", 1)
    for k, v in (("model.width", width), ("model.depth", depth)):
        if not isinstance(v, int) or v < (0 if k == "model.depth" else 1):
            raise ConfigError(f"{k}={v!r} must be a {'non-negative' if k == 'model.depth' else 'positive'} integer")
    return MLP([n_in] + [width] * depth + [n_out], act=cfg.get("act", "tanh"), loss=cfg.get("loss", "bce"),
               bias=cfg.get("bias", True), init=cfg.get("init", "default"))
