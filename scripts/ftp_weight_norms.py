"""Diagnostic probe (not a pipeline stage): retrain one FC run of the FTP table's ``paper_length`` rows
(default: output-step FTP, seed 3) for its first ``--epochs`` epochs through the training engine and print,
per epoch, its training loss, test error and the Frobenius norm of each weight matrix. Same config, seed and
shuffling as the recorded 100-epoch run, so its history is that run's (up to the first lr drop the schedule
does not depend on ``--epochs``); it shows which layer runs away before the run diverges (claims.yaml:
ftp.mnist.fp32_close_to_bp.output_step.paper_length).

    python scripts/ftp_weight_norms.py --seed 3 --epochs 20

One core: ≈ 7 s an epoch."""
from __future__ import annotations

import argparse
import json

from repro.figures import ftp as F
from repro.figures.common import load_params
from repro.models import ConfigError
from repro.train import train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--method", default=F.FTP_OS, help="an FC method of ftp_table (default: output-step FTP)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--params", default="params.yaml", help="params file (its ftp_table section)")
    a = ap.parse_args(argv)
    P = load_params("ftp_table", a.params)
    L = P.get("paper_length") or {}
    if not L:
        raise SystemExit(f"--params {a.params}: ftp_table.paper_length is not set")
    P = {**P, "paper_length": {**L, "methods": [a.method], "seeds": [a.seed], "datasets": ["mnist"]}}
    try:
        jobs = [j for j in F.table_jobs(P, "mnist") if j["part"] == "paper_length"]
    except ConfigError as e:
        raise SystemExit(f"--method {a.method!r}: {e}") from None
    cfg = {**jobs[0]["config"], "epochs": min(a.epochs, L["epochs"])}

    def show(model, row):
        norms = [round(float(p.detach().norm()), 2) for p in model.parameters() if p.dim() == 2]
        print(json.dumps({"epoch": row["epoch"], "train_loss": row["train_loss"], "test_error": row["test_error"],
                          "weight_norms": norms}), flush=True)
    train(cfg, a.device, on_epoch=show)


if __name__ == "__main__":
    main()
