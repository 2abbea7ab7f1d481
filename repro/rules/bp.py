"""Backpropagation: end-to-end autograd of the batch-mean loss (the reference every rule is compared to).

``ortho_every`` > 0 projects every weight matrix back to (semi-)orthogonal with FOTON's Björck iteration
after every ``ortho_every`` steps (foton.md §6 item 10: "BP with and without per-step Björck projection"),
which separates what the orthogonality constraint costs from what FOTON's forward-only update costs.
Default 0: plain BP."""
from __future__ import annotations

import torch

from ..models import ConfigError, loss_value
from .base import Batch, Rule, StepOut


class BP(Rule):
    name = "bp"
    needs_autograd = True
    PARAMS = {"ortho_every": 0, "bjorck_iters": 20, "bjorck_tol": 0.0}

    def __init__(self, **params):
        super().__init__(**params)
        for k in ("ortho_every", "bjorck_iters"):
            v = self.params[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"rule.{k}={v!r} must be a non-negative integer (0 = never)")
        tol = self.params["bjorck_tol"]
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
            raise ConfigError(f"rule.bjorck_tol={tol!r} must be a number in [0, 1) (0 = always bjorck_iters)")
        self.t = 0

    def setup(self, model, n_train):
        if self.params["ortho_every"] and not hasattr(model, "layers"):
            raise ConfigError(f"rule.ortho_every={self.params['ortho_every']} needs an MLP or CNN (Björck acts "
                              f"on their weight matrices); use 0 for {type(model).__name__}")

    def step(self, model, batch: Batch) -> StepOut:
        for p in model.parameters():
            p.grad = None
        y = model(batch.x)
        loss = loss_value(model.loss, y, batch.y)
        loss.backward()
        return StepOut(loss.detach(), y.detach())

    @torch.no_grad()
    def after_step(self, model, batch, out):
        every = self.params["ortho_every"]
        if not every:
            return
        self.t += 1
        if self.t % every == 0:
            from .foton import bjorck
            for lin in list(getattr(model, "convs", ())) + list(model.layers):
                w = lin.weight.view(lin.weight.shape[0], -1)
                lin.weight.copy_(bjorck(w, self.params["bjorck_iters"], tol=self.params["bjorck_tol"]).view_as(lin.weight))
