"""Last-layer-only ("shallow") learning, f3.md §2.3: hidden layers stay at their random init; the
output layer gets the exact gradient of the loss on the frozen random features."""
from ..models import ConfigError
from .feedback import DirectFeedback


class LLO(DirectFeedback):
    name = "llo"
    PARAMS: dict = {}
    train_hidden = False

    def setup(self, model, n_train):
        self.B = []
        self.loss = model.loss
        self.blockwise = hasattr(model, "blocks")
        self.cnn = len(getattr(model, "convs", ())) > 0
        if self.cnn and model.bn:
            raise ConfigError("rule 'llo' on a CNN needs model.cnn.bn=false (its pass skips BatchNorm)")
        self.needs_autograd = False

    def feedback(self, batch, y):  # pragma: no cover - never called
        raise AssertionError("LLO has no hidden feedback")
