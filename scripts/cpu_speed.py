"""Diagnostic probe (not a pipeline stage): what makes a recorded run slow on this CPU — its thread count, or
subnormal floats? README, *Threads, not denormals*.

Retrain the run of ``RECORD`` (a ``runs/<key>.json``) for ``--epochs`` epochs on the first ``--n-train`` training
samples, after an untimed warm-up (data loading, first-call costs), four times — setting A, B, B, A — and print each
setting's mean time (so neither pays the first run's costs or a drift in the machine's load alone) and whether all
four histories agree (``train.history_digits``):

- ``--compare threads`` (default): 1 torch thread vs ``--threads`` (default 2) — on a machine whose cores are
  busy, more threads than free cores spin and wait;
- ``--compare flush``: one thread, without vs with flush-to-zero (``torch.set_flush_denormal``; this thread).

``--full``: retrain the whole recorded run on the thread count its record names and compare its history with
the record's (does this machine reproduce it bitwise?); with ``--compare flush``, with flush-to-zero on.

    python scripts/cpu_speed.py results/spec_scale/foton_alignment/runs/ca039d8e83f41c17.json --n-train 5000
    python scripts/cpu_speed.py results/spec_scale/foton_alignment/runs/ca039d8e83f41c17.json --compare flush
    python scripts/cpu_speed.py results/spec_scale/foton_alignment/runs/ca039d8e83f41c17.json --full

One JSON line each."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from repro.train import history_digits, normalize_config, torch_threads, train


def _timed(cfg: dict, threads: int, flush: bool) -> tuple[float, list[dict]]:
    """Train ``cfg`` on the CPU on ``threads`` threads, flush-to-zero on or off (this thread); defaults restored."""
    torch.set_flush_denormal(flush)
    try:
        with torch_threads(threads):
            t = time.perf_counter()
            hist = train(cfg, "cpu").record["history"]
            return time.perf_counter() - t, hist
    finally:
        torch.set_flush_denormal(False)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", help="a run record, runs/<key>.json")
    ap.add_argument("--compare", choices=("threads", "flush"), default="threads")
    ap.add_argument("--threads", type=int, default=2, help="the thread count compared with 1 (--compare threads)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=10000, help="training samples of the short probe (0 = all)")
    ap.add_argument("--full", action="store_true", help="the whole run, against its record")
    a = ap.parse_args(argv)
    path = Path(a.record)
    if not path.is_file():
        raise SystemExit(f"record {a.record}: no such file (give a runs/<key>.json)")
    rec = json.loads(path.read_text())
    cfg = normalize_config(rec["config"])
    flushing = a.compare == "flush"
    if flushing and not torch.set_flush_denormal(False):
        raise SystemExit("this CPU cannot flush denormals (torch.set_flush_denormal needs SSE3 on x86, or ARM)")
    if a.full:
        threads = int(rec.get("env", {}).get("threads") or 1)
        sec, hist = _timed(cfg, threads, flushing)
        out = {"key": rec["key"], "threads": threads, "flush": flushing, "seconds": round(sec, 1),
               "seconds_record": rec.get("env", {}).get("seconds"),
               "history_equals_record": history_digits(hist) == history_digits(rec["history"])}
    else:
        if a.epochs < 1 or a.n_train < 0 or a.threads < 1:
            raise SystemExit(f"--epochs {a.epochs} / --n-train {a.n_train} / --threads {a.threads}: need epochs >= 1, "
                             "n-train >= 0 and threads >= 1")
        cfg = {**cfg, "epochs": min(a.epochs, cfg["epochs"]),
               "dataset": {**cfg["dataset"], "n_train": a.n_train or cfg["dataset"]["n_train"]}}
        settings = {"off": (1, False), "on": (1, True)} if flushing else {"1": (1, False), str(a.threads): (a.threads, False)}
        A, B = settings
        _timed({**cfg, "epochs": 1, "dataset": {**cfg["dataset"], "n_train": 2 * cfg["batch_size"]}}, 1, False)
        runs = [(s, *_timed(cfg, *settings[s])) for s in (A, B, B, A)]
        out = {"key": rec["key"], "compare": a.compare, "epochs": cfg["epochs"], "n_train": cfg["dataset"]["n_train"],
               "seconds": {s: round(sum(t for g, t, _ in runs if g == s) / 2, 2) for s in (A, B)},
               "histories_equal": all(history_digits(h) == history_digits(runs[0][2]) for _, _, h in runs)}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
