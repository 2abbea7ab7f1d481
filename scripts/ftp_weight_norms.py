"""Diagnostic probe (not a pipeline stage): train output-step FTP on MNIST at the table's settings with a
CONSTANT lr (the first 60 epochs of the spec's schedule) and print, per epoch, the training loss and the
Frobenius norm of each weight matrix. It shows which layer runs away before the 100-epoch runs diverge
(claims.yaml: ftp.mnist.fp32_close_to_bp.output_step.paper_length).

    python scripts/ftp_weight_norms.py --seed 3 --epochs 30

Shuffling here is its own (torch.randperm seeded by --seed), so the epoch of divergence differs from the
pipeline run's; the trend is what it measures. One core: ≈ 7 s an epoch."""
from __future__ import annotations

import argparse
import json

import torch

from repro.figures import ftp as F
from repro.figures.common import load_params
from repro.rules import Batch
from repro.train import build, load_data, make_optimizer, normalize_config, resolve_device, train_step


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--method", default=F.FTP_OS, help="an FC method of ftp_table (default: output-step FTP)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--params", default="params.yaml", help="params file (its ftp_table section)")
    a = ap.parse_args(argv)
    P = {**load_params("ftp_table", a.params), "paper_length": None, "seeds": [a.seed], "cnn": None}
    jobs = [j for j in F.table_jobs(P, "mnist") if j["method"] == a.method and j.get("gamma") in (None, P["gamma"])]
    if not jobs:
        raise SystemExit(f"--method {a.method!r}: not an FC method of ftp_table ({', '.join(P['methods'])})")
    cfg = normalize_config(jobs[0]["config"])
    cfg["optim"]["milestones"] = []  # constant lr: what the 100-epoch schedule does until epoch 60
    dev = resolve_device(a.device)
    data = load_data(cfg, dev)
    model, rule = build(cfg, dev, data)
    params = rule.trainable(model)
    opt, _ = make_optimizer(params, cfg["optim"])
    g = torch.Generator().manual_seed(a.seed)
    n, bs = len(data.x_train), cfg["batch_size"]
    for epoch in range(1, a.epochs + 1):
        perm = torch.randperm(n, generator=g).to(dev)
        total = 0.0
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            out = train_step(model, rule, opt, Batch(idx, data.x_train[idx], data.y_train[idx]), params)
            total += float(out.loss) * len(idx)
        norms = [round(float(p.detach().norm()), 2) for p in params if p.dim() == 2]
        print(json.dumps({"epoch": epoch, "train_loss": total / n, "weight_norms": norms}), flush=True)
        if not total / n < 1e6:  # ran away (or NaN)
            break


if __name__ == "__main__":
    main()
