"""Backpropagation: end-to-end autograd of the batch-mean loss (the reference every rule is compared to).

``ortho_every`` > 0 projects every weight matrix back to (semi-)orthogonal with FOTON's Björck iteration
after every ``ortho_every`` steps (foton.md §6 item 10: "BP with and without per-step Björck projection"),
which separates what the orthogonality constraint costs from what FOTON's forward-only update costs.
Default 0: plain BP.

``keep`` < 1 trains with inverted dropout on every hidden layer of an MLP (masks Bernoulli(keep)/keep on the
pre-activations, drawn as FOTON and PEPITA draw theirs; evaluation without dropout): the BP counterpart of
the dropout 0.1 the FOTON code uses (foton.md §6 item 13). Default 1: no dropout."""
from __future__ import annotations

from ..models import ConfigError, loss_value
from .base import Batch, Rule, StepOut, dropout_masks


class BP(Rule):
    name = "bp"
    needs_autograd = True
    PARAMS = {"ortho_every": 0, "bjorck_iters": 20, "bjorck_tol": 0.0, "keep": 1.0}

    def __init__(self, **params):
        super().__init__(**params)
        from .foton import check_bjorck_params
        check_bjorck_params(self.params)
        keep = self.params["keep"]
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ConfigError(f"rule.keep={keep!r} must be in (0, 1] (1 = no dropout)")
        self.t = 0

    def setup(self, model, n_train):
        if self.params["ortho_every"] and not hasattr(model, "layers"):
            raise ConfigError(f"rule.ortho_every={self.params['ortho_every']} needs an MLP or CNN (Björck acts "
                              f"on their weight matrices); use 0 for {type(model).__name__}")
        if self.params["keep"] < 1 and not hasattr(model, "forward_all"):
            raise ConfigError(f"rule.keep={self.params['keep']} (dropout) is implemented for MLPs; "
                              f"use 1 for {type(model).__name__}")

    def step(self, model, batch: Batch) -> StepOut:
        for p in model.parameters():
            p.grad = None
        keep = self.params["keep"]
        if keep < 1:
            y = model.forward_all(batch.x, dropout_masks(model, len(batch.x), keep, batch.x.device))[1][-1]
        else:
            y = model(batch.x)
        loss = loss_value(model.loss, y, batch.y)
        loss.backward()
        return StepOut(loss.detach(), y.detach())

    def after_step(self, model, batch, out):
        every = self.params["ortho_every"]
        if not every:
            return
        self.t += 1
        if self.t % every == 0:
            from .foton import project_all
            project_all(model, self.params["bjorck_iters"], self.params["bjorck_tol"])
