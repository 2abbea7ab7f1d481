"""Direct Random Target Projection (Frenkel et al. 2021), f3.md §2.5: e = y* (the one-hot target, or
the standardised regression target). No error information reaches the hidden layers."""
from .feedback import DirectFeedback


class DRTP(DirectFeedback):
    name = "drtp"

    def feedback(self, batch, y):
        return batch.y
