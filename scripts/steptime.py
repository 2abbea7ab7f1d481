"""Time training steps of chosen runs of a figure section and project the time a whole run takes — to plan
where a sweep can run (this CPU, a lent GPU) before spending a lease on it.

usage: python scripts/steptime.py [--params P] [--steps N] [--device D] 'SECTION|col=val,col=val' ...

Each argument picks the first run of SECTION (its jobs as ``params``/P builds them; e.g. P from
``python -m repro spec --write P`` for the papers' scale) whose columns equal the values given, e.g.
``'f3_depth|algorithm=DFA,depth=100,seed=1'``. The run is set up exactly as ``train`` starts it (seeded
model, rule, optimizer), takes 3 untimed steps, then N timed ones (the device synchronised around them),
and the line printed gives ms a step, steps an epoch and epochs, and minutes a run for the training steps
alone (evaluation and checkpoints excluded). All in one process, so CUDA and each dataset are set up once.
A rule with periodic work (FOTON's Björck every o steps, 𝔽 refreshed every ff) needs N of at least that
period, and a multiple of it, for the mean to include it.
Measured on this 2-core CPU (session 34, one thread): f3_depth at depth 100 ≈ 0.70 s a DFA step, 0.91 s a BP step
(1,510 steps an epoch, 200 epochs: ≈ 59 and 76 h a run).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from repro.figures import jobs as section_jobs
from repro.figures.common import load_params
from repro.models import ConfigError
from repro.rules import Batch
from repro.train import build, keep_freed_memory, load_data, make_optimizer, normalize_config, resolve_device, train_step


def pick(section: str, filt: str, params: str) -> dict:
    try:
        want = dict(kv.split("=", 1) for kv in filt.split(",")) if filt else {}
    except ValueError:
        raise SystemExit(f"steptime: {filt!r}: give the columns as col=val,col=val") from None
    J = section_jobs(section, load_params(section, params))
    sel = [j for j in J if all(str(j.get(k)) == v for k, v in want.items())]
    if not sel:
        cols = sorted({k for j in J for k in j if k != "config"})
        raise SystemExit(f"steptime: no run of {section} has {want} (its columns: {cols})")
    return sel[0]


def time_steps(cfg: dict, dev: torch.device, data, steps: int) -> float:
    """Seconds a training step of ``cfg`` takes (mean of ``steps`` after 3 untimed)."""
    model, rule = build(cfg, dev, data)
    params = rule.trainable(model)
    opt, _ = make_optimizer(params, cfg["optim"])
    n, bs = len(data.x_train), cfg["batch_size"]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg["seed"])).to(dev)
    rule.begin_epoch(model, 1)

    def step(s: int) -> None:
        lo = (s * bs) % max(n - bs, 1)
        idx = perm[lo:lo + bs]
        train_step(model, rule, opt, Batch(idx, data.x_train[idx], data.y_train[idx]), params)

    for s in range(3):
        step(s)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t = time.perf_counter()
    for s in range(steps):
        step(s + 3)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t) / steps


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="SECTION|col=val,...")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    if a.steps < 1:
        raise SystemExit(f"steptime: --steps={a.steps} must be at least 1")
    keep_freed_memory()  # as train() runs
    try:
        dev = resolve_device(a.device)
    except ConfigError as e:
        raise SystemExit(f"steptime: {e}") from None
    data_cache, out = {}, []
    for arg in a.runs:
        section, _, filt = arg.partition("|")
        job = pick(section, filt, a.params)
        cfg = normalize_config(job["config"])
        dk = repr(cfg["dataset"])
        if dk not in data_cache:
            data_cache[dk] = load_data(cfg, dev)
        data = data_cache[dk]
        dt = time_steps(cfg, dev, data, a.steps)
        per_epoch = -(-len(data.x_train) // cfg["batch_size"])
        row = {"run": arg, "device": str(dev), "ms_per_step": dt * 1e3, "steps_per_epoch": per_epoch,
               "epochs": cfg["epochs"], "minutes_per_run": dt * per_epoch * cfg["epochs"] / 60}
        print(f"{arg}: {row['ms_per_step']:.2f} ms a step ({dev}, {torch.get_num_threads()} threads), "
              f"{per_epoch} steps an epoch × {cfg['epochs']} epochs ≈ {row['minutes_per_run']:.1f} min a run "
              f"(training steps only)", flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
