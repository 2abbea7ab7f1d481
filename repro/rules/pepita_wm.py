"""PEPITA with weight mirroring (Srinivasan et al. 2023), foton.md §2.8.2.

The fixed projection becomes a product of per-layer matrices ``F = F_1 ⋯ F_L`` (``F_l``: d_{l−1}×d_l),
the input is modulated as ``x̃ = x − E Fᵀ`` and the output update uses the clean-pass error E
("modulated" mode of the authors' code). In mirroring epochs each ``F_l`` also learns, from noise
``ξ`` pushed through layer l (with dropout and ReLU), ``F_l += wmlr·ξᵀη/B − wmlr·wmwd·F_l``, which makes
``F_l`` drift towards ∝ ``W_lᵀ``; afterwards all ``F_l`` are rescaled by one common factor so that
``std(F) = √(2/d0)·0.05``. Mirroring runs in every batch of the first ``pre_mirror`` epochs and of every
epoch with ``epoch % mirror == 0`` (1-based; the code's ``(e+1) % mirror`` with 0-based e).

Reconstruction choices (the two code defaults disagree, foton.md §6 item 9): wmlr 0.1, wmwd 0.5,
pre_mirror 2, mirror 10; the noise passes through a freshly drawn dropout mask.
"""
from __future__ import annotations

import math

import torch

from ..models import ConfigError
from .pepita import PEPITA


class PEPITAWM(PEPITA):
    name = "pepita_wm"
    PARAMS = {"keep": 0.9, "sign": -1.0, "output_error": "clean", "f_scale": 0.05, "wmlr": 0.1, "wmwd": 0.5,
              "pre_mirror": 2, "mirror": 10, "noise": 0.1}

    def setup(self, model, n_train):
        if len(getattr(model, "convs", ())) > 0:
            raise ConfigError("rule 'pepita_wm' is implemented for MLPs only; on a CNN use 'pepita'")
        self.cnn = False
        d0 = model.sizes[0]
        L = len(model.layers)
        self.target_std = math.sqrt(2.0 / d0) * self.params["f_scale"]
        hidden = math.prod(model.sizes[1:-1]) if L > 1 else 1
        s = (self.target_std / math.sqrt(hidden)) ** (1.0 / L)
        dev = model.layers[0].weight.device
        self.Fl = [torch.randn(a, b, device=dev) * s for a, b in zip(model.sizes[:-1], model.sizes[1:])]
        self.mirroring = False

    def feedback(self) -> torch.Tensor:
        f = self.Fl[0]
        for m in self.Fl[1:]:
            f = f @ m
        return f

    def begin_epoch(self, model, epoch):
        p = self.params
        self.mirroring = epoch <= p["pre_mirror"] or (p["mirror"] > 0 and epoch % p["mirror"] == 0)

    @torch.no_grad()
    def mirror_step(self, model, batch_size: int) -> None:
        p = self.params
        L = len(model.layers)
        for i, lin in enumerate(model.layers):
            xi = p["noise"] * torch.randn(batch_size, lin.in_features, device=lin.weight.device)
            xi = xi - xi.mean()
            eta = xi @ lin.weight.t()
            if i < L - 1:
                if p["keep"] < 1.0:
                    eta = eta * torch.bernoulli(torch.full_like(eta, p["keep"])) / p["keep"]
                eta = model.act.fn(eta)
            self.Fl[i] += p["wmlr"] * (xi.t() @ eta) / batch_size - p["wmlr"] * p["wmwd"] * self.Fl[i]
        factor = (self.target_std / float(self.feedback().std())) ** (1.0 / L)
        for f in self.Fl:
            f.mul_(factor)

    def after_step(self, model, batch, out):
        if self.mirroring:
            self.mirror_step(model, len(batch.idx))

    def state_dict(self):
        return {f"F{i}": f for i, f in enumerate(self.Fl)}

    def load_state_dict(self, state):
        self.Fl = [state[f"F{i}"] for i in range(len(state))]
