"""Diagnostic probe (not a pipeline stage): retrain Fig. 2's F³-Error MNIST run (section ``f3_mnist``) and
print, per epoch, its training loss and test error, then one summary line — to look at F³-Error's late
oscillation (README, *Misses*: its final-epoch error swings 1–2 points between epochs while DFA, which feeds
back the same error vector but the current one, and the one-hot variant, which feeds back only the
true-class component of the delayed error, converge smoothly).

With no option it is the recorded run itself (same config, seed and shuffling, so the same history). Options
change one thing each:
- ``--read true``: feed back only the true-class component of the delayed error, y* ⊙ E — that is the
  paper's F³-Error + OneHot (``delayed_error_one_hot``, Fig. 3a's run);
- ``--read wrong``: feed back only the wrong-class components, (1 − y*) ⊙ E — a probe of our own, not a
  method of the paper (a rule registered by this script only, never in a sweep);
- ``--lr-drop EPOCH``: Adam's learning rate ×0.1 from that epoch on (the paper uses a constant rate).

    python scripts/f3_oscillation.py --seed 2                  # the recorded run (≈ 8 min on one core)
    python scripts/f3_oscillation.py --seed 2 --read wrong
    python scripts/f3_oscillation.py --seed 2 --lr-drop 50

The summary line gives the final and best test error and the standard deviation of the test error over the
last ``--tail`` epochs (default 30), the oscillation measure the README quotes."""
from __future__ import annotations

import argparse
import json
import statistics

from repro.figures import f3 as F
from repro.figures.common import load_params
from repro.rules import RULES
from repro.rules.f3 import F3
from repro.train import train

PROBE_RULE = "f3_wrong_class_probe"


class F3WrongClass(F3):
    """F³-Error whose hidden layers get only the wrong-class components of the delayed error."""
    name = PROBE_RULE

    def feedback(self, batch, y):
        return (1 - batch.y) * super().feedback(batch, y)


def job_config(P: dict, seed: int, read: str, lr_drop: int | None, epochs: int | None) -> dict:
    """The F³-Error config of ``f3_mnist`` for ``seed``, changed as the options say."""
    if read not in ("all", "true", "wrong"):
        raise SystemExit(f"--read {read!r}: choose all, true or wrong")
    extra = {"error_info": "delayed_error_one_hot"} if read == "true" else None
    cfg = F.mlp_job("mnist", "F3-Error", seed, P, "bce", extra)["config"]
    if read == "wrong":
        cfg = {**cfg, "rule": {**cfg["rule"], "name": PROBE_RULE}}
    if epochs is not None:
        if epochs < 1:
            raise SystemExit(f"--epochs {epochs}: must be >= 1")
        cfg = {**cfg, "epochs": min(epochs, cfg["epochs"])}
    if lr_drop is not None:
        if not 1 <= lr_drop < cfg["epochs"]:
            raise SystemExit(f"--lr-drop {lr_drop}: must be an epoch in 1 … {cfg['epochs'] - 1}")
        cfg = {**cfg, "optim": {**cfg["optim"], "milestones": [lr_drop], "gamma": 0.1}}
    return cfg


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--read", default="all", help="which components of the delayed error reach the hidden "
                    "layers: all (F³-Error), true (= F³-Error+OneHot) or wrong (a probe)")
    ap.add_argument("--lr-drop", type=int, default=None, metavar="EPOCH", help="lr ×0.1 from this epoch on")
    ap.add_argument("--epochs", type=int, default=None, help="stop early (default: the section's epochs)")
    ap.add_argument("--tail", type=int, default=30, help="epochs the summary's standard deviation covers")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--params", default="params.yaml", help="params file (its f3_mnist section)")
    a = ap.parse_args(argv)
    cfg = job_config(load_params("f3_mnist", a.params), a.seed, a.read, a.lr_drop, a.epochs)

    def show(model, row):
        print(json.dumps({"epoch": row["epoch"], "train_loss": row["train_loss"], "test_error": row["test_error"]}),
              flush=True)
    added = PROBE_RULE not in RULES
    RULES.setdefault(PROBE_RULE, F3WrongClass)  # for this run only: the probe rule never enters a sweep
    try:
        hist = train(cfg, a.device, on_epoch=show).record["history"][1:]
    finally:
        if added:
            RULES.pop(PROBE_RULE)
    errs = [h["test_error"] for h in hist]
    tail = errs[-a.tail:]
    summary = {"seed": a.seed, "read": a.read, "lr_drop": a.lr_drop, "epochs": len(errs),
               "final_test_error": errs[-1], "best_test_error": min(errs),
               f"std_test_error_last_{len(tail)}": round(statistics.pstdev(tail), 3),
               "final_train_loss": hist[-1]["train_loss"]}
    print(json.dumps({"summary": summary}), flush=True)
    return summary


if __name__ == "__main__":
    main()
