"""Last-layer-only ("shallow") learning, f3.md §2.3: hidden layers stay at their random init; the
output layer gets the exact gradient of the loss on the frozen random features."""
from .feedback import DirectFeedback


class LLO(DirectFeedback):
    name = "llo"
    PARAMS: dict = {}
    train_hidden = False

    def setup(self, model, n_train):
        self.B = []
        self.loss = model.loss
        self.blockwise = hasattr(model, "blocks")
        self.needs_autograd = False

    def feedback(self, batch, y):  # pragma: no cover - never called
        raise AssertionError("LLO has no hidden feedback")
