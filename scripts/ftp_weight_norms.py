"""Diagnostic probe (not a pipeline stage): retrain one recorded FC run for its first ``--epochs`` epochs
through the training engine and print, per epoch, its training loss, test error, the Frobenius norm of each
weight matrix, its largest |entry| (the dynamic quantisation scale is max|W|/(2^{b-1} - 1): a growing max
coarsens the whole matrix's grid) and the share of each weight matrix's last update that is exactly zero (the
rule wrote 0 into ``.grad``: the learning signal vanished, e.g. by rounding). Same config, seed and shuffling as the
recorded run, so its history is that run's (up to the first lr drop the schedule does not depend on
``--epochs``); it shows which layer runs away before a run diverges.

Three sources of runs:
- default: a ``paper_length`` row of the FTP table (``--method``, ``--seed``; claims.yaml:
  ftp.mnist.fp32_close_to_bp.output_step.paper_length);
- ``--bits B``: a run of the quantised sweep (``ftp_quantized``; ``--level``, default ``full``;
  ``--stable-gamma`` for its FTP readings at ``stable_gamma``): e.g. why PEPITA recovers at 4 bits but blows up
  at 6 (README);
- ``--noise KIND=VALUE``: a run of the non-ideality sweep (``ftp_noise``; ``--stable-gamma`` for its FTP
  readings at ``stable_gamma``): e.g. whether FTP's 8-bit conductance-level runs at γ 0.05 keep their accuracy
  while their weights run away (README).

    python scripts/ftp_weight_norms.py --seed 3 --epochs 20
    python scripts/ftp_weight_norms.py --method PEPITA --bits 6 --seed 1 --epochs 10
    python scripts/ftp_weight_norms.py --noise conductance_bits=8 --stable-gamma --seed 1 --epochs 10
    python scripts/ftp_weight_norms.py --method BP --bits 4 --seed 1 --epochs 5 --float-master

``--float-master`` retrains the run with ``hardware.master_copy`` on (repro/quant.py; the sweep's
``ftp_quantized.master_copy`` part runs it at 10 epochs): the weights are stored rounded as in the hardware
model, but each step's update is added to a float copy kept beside them and the stored weights are that copy
rounded (a "master copy", as in mixed-precision training) — so the stochastic rounding noise no longer
accumulates in the weights (README #5: why BP collapses at 4 bits under a sustained lr). With ``--noise
write_noise=K`` or ``conductance_bits=B`` the same copy takes the programming error or the rounding to levels at
each write afresh (the ``ftp_noise.master_copy`` part).

One core: ≈ 7 s an epoch in float, ≈ 30 s quantised."""
from __future__ import annotations

import argparse
import json
from repro.figures import ftp as F
from repro.figures.common import load_params
from repro.models import ConfigError
from repro.quant import Hardware
from repro.train import train


def _table_job(a) -> tuple[dict, int]:
    P = load_params("ftp_table", a.params)
    L = P.get("paper_length") or {}
    if not L:
        raise SystemExit(f"--params {a.params}: ftp_table.paper_length is not set")
    P = {**P, "paper_length": {**L, "methods": [a.method], "seeds": [a.seed], "datasets": ["mnist"], "gammas": []}}
    try:
        jobs = [j for j in F.table_jobs(P, "mnist") if j["part"] == "paper_length"]
    except ConfigError as e:
        raise SystemExit(f"--method {a.method!r}: {e}") from None
    return jobs[0]["config"], L["epochs"]


def _part(a, P: dict, section: str) -> str:
    """The jobs' ``part`` that ``--stable-gamma`` selects in ``section`` (its FTP readings at stable_gamma)."""
    if a.stable_gamma and P.get("stable_gamma") is None:
        raise SystemExit(f"--stable-gamma: {section}.stable_gamma is not set in {a.params}")
    return "stable_gamma" if a.stable_gamma else "sweep"


def _quantized_job(a) -> tuple[dict, int]:
    P = load_params("ftp_quantized", a.params)
    P = {**P, "seeds": [a.seed], "levels": [a.level], "signal_ablation": None, "seeds_by_method": {}}
    try:
        jobs = F.quantized_jobs(P, "mnist")
    except ConfigError as e:
        raise SystemExit(f"--level {a.level!r}: {e}") from None
    part = _part(a, P, "ftp_quantized")
    hit = [j for j in jobs if j["part"] == part and j["method"] == a.method and j["bits"] == a.bits]
    if not hit:
        raise SystemExit(f"--method {a.method!r} --bits {a.bits}: not in ftp_quantized ({part}); methods "
                         f"{sorted({j['method'] for j in jobs if j['part'] == part})}, "
                         f"bits {sorted({j['bits'] for j in jobs})}")
    return hit[0]["config"], P["epochs"]


def _noise_job(a) -> tuple[dict, int]:
    P = load_params("ftp_noise", a.params)
    kind, _, value = a.noise.partition("=")
    try:
        value = float(value)
    except ValueError:
        raise SystemExit(f"--noise {a.noise!r}: expected KIND=VALUE, e.g. conductance_bits=8") from None
    part = _part(a, P, "ftp_noise")
    try:
        jobs = F.noise_jobs({**P, "seeds": [a.seed]}, "mnist")
    except ConfigError as e:
        raise SystemExit(f"--params {a.params}: {e}") from None
    hit = [j for j in jobs if j["part"] == part and j["method"] == a.method and j["kind"] == kind
           and float(j["value"]) == value]
    if not hit:
        raise SystemExit(f"--method {a.method!r} --noise {a.noise!r}: not in ftp_noise ({part}); methods "
                         f"{sorted({j['method'] for j in jobs if j['part'] == part})}, settings {P['noise']}")
    return hit[0]["config"], P["epochs"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--method", default=F.FTP_OS, help="an FC method of the section (default: output-step FTP)")
    ap.add_argument("--bits", type=int, default=None, help="a bit width of ftp_quantized (default: the FTP table)")
    ap.add_argument("--level", default="full", help="with --bits: the quantisation level (default: full)")
    ap.add_argument("--noise", default=None, metavar="KIND=VALUE", help="a setting of ftp_noise, e.g. conductance_bits=8")
    ap.add_argument("--stable-gamma", action="store_true",
                    help="with --noise or --bits: the FTP readings at that section's stable_gamma")
    ap.add_argument("--float-master", action="store_true",
                    help="counterfactual: keep a float copy of the weights beside the rounded ones (see above)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--params", default="params.yaml", help="params file (its ftp_table / ftp_quantized / ftp_noise section)")
    a = ap.parse_args(argv)
    if a.noise is not None and a.bits is not None:
        raise SystemExit("--noise and --bits: give one (a run of ftp_noise or of ftp_quantized)")
    cfg, epochs = (_noise_job(a) if a.noise is not None else _table_job(a) if a.bits is None else _quantized_job(a))
    cfg = {**cfg, "epochs": min(a.epochs, epochs)}
    if a.float_master:  # hardware.master_copy decides which runs can keep a copy (repro/quant.py)
        hw = {**(cfg.get("hardware") or {}), "master_copy": True}
        try:
            Hardware(hw)
        except ConfigError as e:
            raise SystemExit(f"--float-master: this run stores its weights exactly (give --bits, or --noise "
                             f"write_noise=K or conductance_bits=B): {e}") from None
        cfg = {**cfg, "hardware": hw}

    def show(model, row):
        weights = [p for p in model.parameters() if p.dim() == 2]
        print(json.dumps({"epoch": row["epoch"], "train_loss": row["train_loss"], "test_error": row["test_error"],
                          "weight_norms": [round(float(p.detach().norm()), 2) for p in weights],
                          "weight_max": [round(float(p.detach().abs().max()), 3) for p in weights],
                          "zero_update": [None if p.grad is None else round(100 * float((p.grad == 0).float().mean()), 1)
                                          for p in weights]}), flush=True)
    train(cfg, a.device, on_epoch=show)


if __name__ == "__main__":
    main()
