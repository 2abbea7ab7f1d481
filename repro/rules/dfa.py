"""Direct Feedback Alignment (Nøkland 2016) as in the F³ code (f3.md §2.4): e = y* − y of the current
model on the same minibatch (single pass; identical to the authors' extra eval pass for the MLP)."""
from ..models import prediction
from .feedback import DirectFeedback


class DFA(DirectFeedback):
    name = "dfa"

    def feedback(self, batch, y):
        return batch.y - prediction(self.loss, y)
