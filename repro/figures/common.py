"""Helpers shared by the figure modules: params, run stores, tidy frames, metric aggregation."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

from ..models import ConfigError
from ..train import RunStore, run_key, sweep


def load_params(section: str, params_file: str | Path = "params.yaml", overrides: dict | None = None) -> dict:
    """One figure's params (plus the global ``device``, ``workers`` and ``threads``), with dotted-key overrides."""
    p = Path(params_file)
    if not p.is_file():
        raise ConfigError(f"params_file={str(p)!r} does not exist")
    allp = yaml.safe_load(p.read_text())
    if section not in allp:
        raise ConfigError(f"section={section!r} is not in {p}; sections: {', '.join(k for k in allp if isinstance(allp[k], dict))}")
    out = dict(allp[section])
    out.setdefault("device", os.environ.get("REPRO_DEVICE", allp.get("device", "auto")))
    out.setdefault("workers", int(os.environ.get("REPRO_WORKERS", allp.get("workers", 1))))
    # torch threads per run (default 1: the runs' digits do not depend on the core count; README, *Threads*)
    out.setdefault("threads", int(os.environ.get("REPRO_THREADS", allp.get("threads", 1))))
    for k, v in (overrides or {}).items():
        d = out
        *head, last = k.split(".")
        for h in head:
            if h not in d or not isinstance(d[h], dict):
                raise ConfigError(f"override {k!r}: {h!r} is not a mapping in section {section!r}")
            d = d[h]
        if last not in d:
            raise ConfigError(f"override {k!r}: unknown key; allowed: {', '.join(d)}")
        d[last] = v
    return out


def check_known(name: str, values, allowed) -> None:
    """One line naming the parameter if any of ``values`` is not in ``allowed`` (e.g. a method list)."""
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"{name}: {bad} unknown; allowed: {', '.join(allowed)}")


def store_for(section: str, results: str | Path = "results") -> RunStore:
    """The run store of one stage (``results/<section>/runs`` + ``weights``); every other stage's store
    under ``results`` is shared, so a config another figure already trained is copied, not retrained."""
    base = Path(results) / section
    own = (base / "runs").resolve() if (base / "runs").exists() else None
    shared = [(r, r.parent / "weights") for pat in ("*/runs", "*/*/runs") for r in sorted(Path(results).glob(pat))
              if r.is_dir() and r.resolve() != own]
    return RunStore(base / "runs", base / "weights", shared)


def run_all(jobs: list[dict], store: RunStore, P: dict, desc: str) -> list[dict]:
    """``jobs``: dicts with ``config`` plus descriptive columns; returns them with ``record`` added.
    ``P["restore_weights"]`` (set by ``python -m repro sweep --restore-weights``, never in params.yaml): then
    retrain each finished run whose weights this store lacks (a fresh clone, an older checkout) for them,
    one after another (``RunStore.restore_weights``: on the CPU its history equals the record's bitwise)."""
    recs = sweep([j["config"] for j in jobs], store, device=P["device"], workers=P["workers"],
                 threads=P.get("threads", 1), desc=desc)
    if P.get("restore_weights"):
        keys = {run_key(j["config"]): j["config"] for j in jobs}
        missing = [k for k in keys if not (store.weights / f"{k}.pt").is_file()]
        print(f"{desc}: {len(keys)} runs, weights missing for {len(missing)}", flush=True)
        for k in missing:
            store.restore_weights(keys[k], device=P["device"])
    return [{**j, "record": r, "key": run_key(j["config"])} for j, r in zip(jobs, recs)]


def history_frame(done: list[dict]) -> pd.DataFrame:
    rows = []
    for j in done:
        meta = {k: v for k, v in j.items() if k not in ("config", "record")}
        for h in j["record"]["history"]:
            rows.append({**meta, "status": j["record"]["status"], **h})
    return pd.DataFrame(rows)


def final_frame(done: list[dict]) -> pd.DataFrame:
    rows = []
    for j in done:
        meta = {k: v for k, v in j.items() if k not in ("config", "record")}
        rows.append({**meta, "status": j["record"]["status"], **j["record"]["summary"]})
    return pd.DataFrame(rows)


def agg(values) -> dict:
    v = np.asarray(list(values), dtype=float)
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "min": float(np.min(v)), "max": float(np.max(v)), "n": int(len(v))}


def gap_closed(m_drtp: float, m_f3: float, m_bp: float) -> float:
    """f3.md §4: (M_DRTP − M_F3) / (M_DRTP − M_BP) × 100 %."""
    return 100.0 * (m_drtp - m_f3) / (m_drtp - m_bp)


def write_metrics(path: str | Path, metrics: dict) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")


def repo_root(start: str | Path | None = None) -> Path:
    """The folder holding params.yaml (so a notebook opened from notebooks/ finds the project)."""
    p = Path(start or Path.cwd()).resolve()
    for cand in (p, *p.parents):
        if (cand / "params.yaml").is_file() and (cand / "repro").is_dir():
            return cand
    raise ConfigError(f"no project root (a folder with params.yaml and repro/) above {p}")


@contextmanager
def fixed_jitter(seed: int = 0):
    """Seed numpy's global RNG for the plotting inside, then give the caller's state back. seaborn's
    ``stripplot`` jitters with ``np.random.uniform``: unseeded, a figure with several seeds per category
    had different PNG bytes on every ``dvc repro`` of the same runs."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def save(fig, path: str | Path, dpi: int = 110) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")


def run_for_dataset(jobs: list[dict], dataset: str, section: str, P: dict, results: str | Path = "results"):
    """For per-dataset stages: (history, finals, None), or (None, None, reason) when ``dataset`` cannot be
    obtained here — the stage then skips it with that message instead of failing the pipeline."""
    from .. import data as data_mod
    reason = data_mod.try_fetch(dataset)
    if reason is not None:
        return None, None, reason
    done = run_all(jobs, store_for(f"{section}/{dataset}", results), P, desc=f"{section} {dataset}")
    return history_frame(done), final_frame(done), None


def mark_skipped(out: str | Path, reason: str) -> None:
    """Write a skipped stage's declared outputs (runs/, weights/, figures/, metrics.json) with the reason."""
    out = Path(out)
    print(f"SKIPPED {out.name}: {reason}")
    for sub in ("runs", "weights", "figures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        (out / sub / "SKIPPED.txt").write_text(reason + "\n")
    write_metrics(out / "metrics.json", {"skipped": reason})


def measured(fin: pd.DataFrame) -> pd.DataFrame:
    """Every run at the accuracy its final model was measured at: a diverged run's NaN model predicts one
    class (≈ chance), so divergence counts as failure instead of vanishing from means and plots."""
    return fin[fin.final_test_acc.notna()]


def mark_diverged(ax, d: pd.DataFrame, x: str) -> None:
    """Diverged runs drawn as × at their measured accuracy (they are also in the lines and means)."""
    bad = d[d.status == "diverged"]
    if len(bad):
        ax.scatter(bad[x], bad.final_test_acc, marker="x", s=60, c="k", zorder=6, label="diverged")


def budget(P: dict | None, spec: str = "100 epochs, 3 seeds") -> str:
    """What ran, for a figure title (paper-scale settings do not fit on every machine; README)."""
    if P is None:
        return ""
    e, n = P["epochs"], len(P["seeds"])
    images = f" on the first {P['n_train']:,} training samples" if P.get("n_train") else ""
    line = f"{e} epoch{'s' * (e != 1)}, {n} seed{'s' * (n != 1)}{images} (spec: {spec})"
    few = {m: len(v) for m, v in (P.get("seeds_by_method") or {}).items()}
    if few:  # methods that ran fewer seeds (seed_filter)
        line += "; " + ", ".join(f"{m}: {k} seed{'s' * (k != 1)}" for m, k in few.items())
    return line


def seed_filter(P: dict, section: str, labels) -> Callable[[str, int], bool]:
    """``seeds_by_method`` (optional, ``{method label: [seeds]}``): a costly method trains on fewer of the
    figure's ``seeds`` than the rest (the title's budget line and the README say which). Returns
    ``keep(label, seed)``; a label that is not one of ``labels`` is named in one line."""
    by = P.get("seeds_by_method") or {}
    bad = sorted(set(by) - set(labels))
    if bad:
        raise ConfigError(f"{section}.seeds_by_method: {bad} are not methods of this figure; "
                          f"allowed: {sorted(set(labels))}")
    extra = {m: sorted(set(v) - set(P["seeds"])) for m, v in by.items() if set(v) - set(P["seeds"])}
    if extra:  # a seed outside seeds would silently train nothing
        raise ConfigError(f"{section}.seeds_by_method: {extra} not in {section}.seeds {list(P['seeds'])}; "
                          "it can only drop seeds")
    return lambda label, seed: label not in by or seed in by[label]
