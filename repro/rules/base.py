"""The one interface every learning rule implements.

A rule turns a minibatch into parameter *updates written into ``p.grad``*; a standard ``torch.optim``
optimizer then applies them, so rule and optimizer stay separate (BP is just another rule). The
training loop calls, per minibatch::

    out = rule.step(model, batch)       # fills p.grad for rule.trainable(model); returns StepOut
    optimizer.step()
    rule.after_step(model, batch, out)  # buffers, re-orthogonalisation, FF refresh, ...

Hooks that later rules need are part of the interface from the start:
- two forward passes (PEPITA, FOTON, FTP) happen inside ``step``; ``StepOut.extras`` carries anything
  ``after_step`` needs;
- layer-local losses (FFzero) compute their own local gradients inside ``step``; ``phases`` lets a rule
  train parameter groups one after another (greedy layer-wise training: ``epochs`` per phase, a fresh
  optimizer each, ``begin_phase`` to cache the layer's inputs); a rule may define
  ``evaluate(model, x, y, labels) -> {"loss", "error", ...}`` when its prediction is not ``model(x)``
  (FFzero's layer vote);
- ``needs_autograd`` says whether ``step`` builds a graph; forward-only rules run under ``no_grad``;
- ``state_dict`` holds the rule's own tensors (feedback matrices, ...), saved with the weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from ..models import ConfigError


class Batch(NamedTuple):
    idx: torch.Tensor  # positions of the samples in the training set (for per-sample buffers)
    x: torch.Tensor
    y: torch.Tensor  # float targets: one-hot [B, C] or standardised [B, 1]


@dataclass
class StepOut:
    loss: torch.Tensor  # batch-mean training loss of this step's (first) forward pass, detached
    y: torch.Tensor  # model output of that pass, detached, computed with the pre-step weights
    extras: dict = field(default_factory=dict)


class Rule:
    """Base class. Subclasses set ``name`` and ``PARAMS`` (allowed keyword arguments and defaults)."""

    name = "rule"
    PARAMS: dict = {}
    needs_autograd = False

    def __init__(self, **params):
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            raise ConfigError(f"rule {self.name!r}: unknown parameter(s) {sorted(unknown)}; "
                              f"allowed: {sorted(self.PARAMS) or 'none'}")
        self.params = {**self.PARAMS, **params}

    # -- lifecycle ---------------------------------------------------------------------------------
    def setup(self, model: nn.Module, n_train: int) -> None:
        """Called once after the model is built (same seed state): draw feedback, allocate buffers."""

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())

    def phases(self, model: nn.Module) -> list[list[nn.Parameter]]:
        """Parameter groups trained one after another; default: one phase, all trainable parameters."""
        return [self.trainable(model)]

    def begin_phase(self, model: nn.Module, phase: int, data) -> None:
        """Called before each phase of a multi-phase rule (e.g. cache the inputs of layer ``phase``)."""

    def begin_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called before each training epoch (1-based), e.g. for schedules inside the rule."""

    def step(self, model: nn.Module, batch: Batch) -> StepOut:  # pragma: no cover - interface
        raise NotImplementedError

    def after_step(self, model: nn.Module, batch: Batch, out: StepOut) -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def dropout_masks(model: nn.Module, batch_size: int, keep: float, device) -> list[torch.Tensor] | None:
    """Inverted-dropout masks (Bernoulli(keep)/keep) for every hidden layer, drawn from the global RNG;
    two-pass rules (PEPITA, FOTON) reuse them in both passes. ``None`` when keep = 1."""
    if keep >= 1.0:
        return None
    return [torch.bernoulli(torch.full((batch_size, n), keep, device=device)) / keep for n in model.sizes[1:-1]]


def signal(model: nn.Module, t: torch.Tensor, kind: str) -> torch.Tensor:
    """A learning signal of ``kind`` (``correction``, ``targets`` or ``errors``; :data:`repro.quant.SIGNAL_KINDS`)
    as the run's hardware model carries it (rounded when ``hardware.signals`` includes that kind)."""
    hw = getattr(model, "hw", None)
    return t if hw is None else hw.signal(t, kind)


def set_grad(p: nn.Parameter, g: torch.Tensor) -> None:
    """Write an update (a freshly computed tensor) into ``p.grad``."""
    p.grad = g.detach()
