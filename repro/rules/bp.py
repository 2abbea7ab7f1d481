"""Backpropagation: end-to-end autograd of the batch-mean loss (the reference every rule is compared to)."""
from __future__ import annotations

from ..models import loss_value
from .base import Batch, Rule, StepOut


class BP(Rule):
    name = "bp"
    needs_autograd = True

    def step(self, model, batch: Batch) -> StepOut:
        for p in model.parameters():
            p.grad = None
        y = model(batch.x)
        loss = loss_value(model.loss, y, batch.y)
        loss.backward()
        return StepOut(loss.detach(), y.detach())
