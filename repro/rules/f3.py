"""F³: Feed-Forward with delayed Feedback (Flügel et al., ICONIP 2024), f3.md §2.6.

The hidden layers learn from the *previous epoch's* output information of the same sample, kept in a
buffer ``E [N_train, C]`` indexed by the sample's position in the training set (so shuffling does not
matter). ``E`` starts as the targets, hence epoch 1 is exactly DRTP. After each optimizer step the
buffer entries of the minibatch are overwritten with information from that step's (pre-update) output.
"""
from __future__ import annotations

import torch

from ..models import check_choice, dloss_dy
from .base import Batch, StepOut
from .feedback import DirectFeedback

# --error_info names of the authors' CLI -> (stored quantity, read/write transform)
ERROR_INFO = {
    "delayed_error": ("error", "none"),
    "delayed_loss": ("loss", "none"),
    "delayed_error_one_hot": ("error", "one_hot"),
    "delayed_loss_one_hot": ("loss", "one_hot"),
    "delayed_error_softmax": ("error", "softmax"),
    "delayed_loss_softmax": ("loss", "softmax"),
}


def softmax_vjp(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Jᵀg for s = softmax(y): ∂/∂y of a function whose gradient w.r.t. s is g."""
    return s * (g - (g * s).sum(1, keepdim=True))


def buffer_value(error_info: str, loss: str, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What F³ stores for a minibatch (f3.md §2.6 table), from output y and targets t."""
    what, transform = ERROR_INFO[error_info]
    if transform == "softmax":
        s = torch.softmax(y, dim=1)
        if what == "error":
            return t - s
        # −∂/∂y of the batch-mean loss evaluated on softmax(y)
        return -softmax_vjp(s, dloss_dy(loss, s, t))
    return t - y if what == "error" else -dloss_dy(loss, y, t)


class F3(DirectFeedback):
    name = "f3"
    PARAMS = {"feedback_init": "kaiming_uniform", "error_info": "delayed_error"}

    def __init__(self, **params):
        super().__init__(**params)
        check_choice("rule.error_info", self.params["error_info"], ERROR_INFO)
        self.one_hot = ERROR_INFO[self.params["error_info"]][1] == "one_hot"

    def setup(self, model, n_train):
        super().setup(model, n_train)
        self.n_train = n_train
        self.E = None  # filled with the targets on first use (targets live with the data)

    def init_buffer(self, y_train: torch.Tensor) -> None:
        self.E = y_train.detach().clone()

    def feedback(self, batch: Batch, y):
        if self.E is None:
            raise RuntimeError("F3: init_buffer(y_train) must be called before training")
        e = self.E[batch.idx]
        return batch.y * e if self.one_hot else e

    @torch.no_grad()
    def after_step(self, model, batch: Batch, out: StepOut) -> None:
        self.E[batch.idx] = buffer_value(self.params["error_info"], model.loss, out.y, batch.y)
