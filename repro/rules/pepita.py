"""PEPITA (Dellaferrera & Kreiman 2022), f3.md §2.8 / foton.md §2.8.1.

Two forward passes, no backward pass: the clean pass gives the error ``e = softmax(y) − y*``; the input
is modulated by a fixed random projection of it, ``x̃ = x + e Fᵀ``; the second pass (same dropout
masks) gives ``h̃``. Updates (descent directions, written as ``p.grad``):
first layer ``(h_1 − h̃_1)ᵀ x̃ / B``, hidden ``(h_ℓ − h̃_ℓ)ᵀ h̃_{ℓ−1} / B``, output ``ẽᵀ h̃_{L−1} / B``
with ``ẽ = softmax(ỹ) − y*`` (both official implementations use the modulated-pass error there).
"""
from __future__ import annotations

import math

import torch

from ..models import ConfigError, loss_value, prediction
from .base import Batch, Rule, StepOut, dropout_masks, set_grad, signal


class PEPITA(Rule):
    name = "pepita"
    PARAMS = {"f_scale": 0.05, "keep": 0.9, "sign": 1.0, "output_error": "modulated"}

    def feedback(self) -> torch.Tensor:
        """The projection F [d0, C] used to modulate the input."""
        return self.F

    def setup(self, model, n_train):
        self.cnn = len(getattr(model, "convs", ())) > 0
        if self.cnn:
            if model.bn or self.params["keep"] < 1.0:
                raise ConfigError(f"rule {self.name!r} on a CNN needs model.cnn.bn=false and rule.keep=1 "
                                  f"(its passes skip BatchNorm; dropout is implemented for MLPs only)")
        d0, c = (math.prod(model.in_shape) if self.cnn else model.sizes[0]), model.sizes[-1]
        a = math.sqrt(6.0 / d0)
        dev = model.layers[0].weight.device
        self.F = (torch.rand(d0, c, device=dev) * 2 * a - a) * self.params["f_scale"]

    def masks(self, model, batch_size: int, device) -> list[torch.Tensor] | None:
        return dropout_masks(model, batch_size, self.params["keep"], device)

    @staticmethod
    def error(model, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return prediction(model.loss, y) - t

    def _cnn_step(self, model, batch: Batch) -> StepOut:
        """CNNs: the same two passes unit by unit; a conv block's update is ``conv2d_weight(h̃_in, h − h̃)``
        on its output before pooling (our reading of PEPITA's conv nets; ftp.md §4.2)."""
        x, t, B = batch.x, batch.y, batch.x.shape[0]
        _, _, hs = model.unit_pass(model.image(x))
        e = signal(model, self.error(model, hs[-1], t), "correction")
        xm = x + self.params["sign"] * (e @ self.feedback().t())
        ins, _, hm = model.unit_pass(model.image(xm))
        em = self.error(model, hm[-1], t)
        units = model.units
        for k, u in enumerate(units):
            d = (em if self.params["output_error"] == "modulated" else e) if k == len(units) - 1 \
                else signal(model, hs[k] - hm[k], "errors")
            gw, gb = model.unit_grad(k, ins[k], d)
            set_grad(u.weight, gw / B)
            if gb is not None:
                set_grad(u.bias, gb / B)
        return StepOut(loss_value(model.loss, hs[-1], t), hs[-1], {})

    @torch.no_grad()
    def step(self, model, batch: Batch) -> StepOut:
        if self.cnn:
            return self._cnn_step(model, batch)
        x, t = batch.x, batch.y
        m = self.masks(model, x.shape[0], x.device)
        _, hs = model.forward_all(x, m)
        e = signal(model, self.error(model, hs[-1], t), "correction")
        xm = x + self.params["sign"] * (e @ self.feedback().t())
        _, hm = model.forward_all(xm, m)
        em = self.error(model, hm[-1], t)
        B = x.shape[0]
        L = len(model.layers)
        for i, lin in enumerate(model.layers):
            if i < L - 1:
                diff = signal(model, hs[i + 1] - hm[i + 1], "errors")
                g = diff.t() @ hm[i] / B  # hm[0] = x̃
                gb = diff.sum(0) / B
            else:
                eo = em if self.params["output_error"] == "modulated" else e
                g = eo.t() @ hm[i] / B
                gb = eo.sum(0) / B
            set_grad(lin.weight, g)
            if lin.bias is not None:
                set_grad(lin.bias, gb)
        return StepOut(loss_value(model.loss, hs[-1], t), hs[-1], {"masks": m})

    def state_dict(self):
        return {"F": self.F}
