"""Diagnostic probe (not a pipeline stage): does flushing subnormal floats to zero
(``torch.set_flush_denormal(True)``: flush-to-zero / denormals-are-zero on this thread) speed up a recorded run,
and does it change its numbers? README, *Denormal numbers*: some deep PEPITA/FOTON runs spend most of their CPU
time in subnormal arithmetic.

Default: retrain the run of ``RECORD`` (a ``runs/<key>.json``) for ``--epochs`` epochs on the first ``--n-train``
training samples, on one thread, once without and once with flush-to-zero, and print both times and whether the
two histories agree (``train.history_digits``). ``--full``: retrain the whole recorded run with flush-to-zero on
the thread count its record names and compare its history with the record's (the flag is per thread: on more than
one thread the others run without it, so this checks the numbers, not the speed).

    python scripts/flush_denormal.py results/spec_scale/foton_alignment/runs/ca039d8e83f41c17.json
    python scripts/flush_denormal.py results/spec_scale/foton_alignment/runs/ca039d8e83f41c17.json --full

One JSON line each."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from repro.train import history_digits, normalize_config, torch_threads, train


def _timed(cfg: dict, flush: bool) -> tuple[float, list[dict]]:
    """Train ``cfg`` on the CPU with flush-to-zero on or off (this thread); the default (off) is restored."""
    torch.set_flush_denormal(flush)
    try:
        t = time.perf_counter()
        hist = train(cfg, "cpu").record["history"]
        return time.perf_counter() - t, hist
    finally:
        torch.set_flush_denormal(False)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", help="a run record, runs/<key>.json")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=10000, help="training samples of the short probe (0 = all)")
    ap.add_argument("--full", action="store_true", help="the whole run with flush-to-zero, against its record")
    a = ap.parse_args(argv)
    path = Path(a.record)
    if not path.is_file():
        raise SystemExit(f"record {a.record}: no such file (give a runs/<key>.json)")
    rec = json.loads(path.read_text())
    cfg = normalize_config(rec["config"])
    if not torch.set_flush_denormal(False):
        raise SystemExit("this CPU cannot flush denormals (torch.set_flush_denormal needs SSE3 on x86, or ARM)")
    if a.full:
        threads = int(rec.get("env", {}).get("threads") or 1)
        with torch_threads(threads):
            sec, hist = _timed(cfg, True)
        out = {"key": rec["key"], "threads": threads, "seconds_flush": round(sec, 1),
               "seconds_record": rec.get("env", {}).get("seconds"),
               "history_equals_record": history_digits(hist) == history_digits(rec["history"])}
    else:
        if a.epochs < 1 or a.n_train < 0:
            raise SystemExit(f"--epochs {a.epochs} / --n-train {a.n_train}: need epochs >= 1 and n-train >= 0")
        cfg = {**cfg, "epochs": min(a.epochs, cfg["epochs"]),
               "dataset": {**cfg["dataset"], "n_train": a.n_train or cfg["dataset"]["n_train"]}}
        with torch_threads(1):
            sec0, h0 = _timed(cfg, False)
            sec1, h1 = _timed(cfg, True)
        out = {"key": rec["key"], "epochs": cfg["epochs"], "n_train": cfg["dataset"]["n_train"],
               "seconds": round(sec0, 2), "seconds_flush": round(sec1, 2),
               "histories_equal": history_digits(h0) == history_digits(h1)}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
