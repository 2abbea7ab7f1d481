"""Sweep definitions and plots, one module per paper. Each figure section of ``params.yaml`` maps to a
function here that builds the run configs, trains what is not cached, and returns tidy DataFrames."""
from __future__ import annotations

from ..models import ConfigError


def _f3(section, P, results, only=None):
    from . import f3
    if not only:
        return f3.run(section, P, results)
    from .common import run_all, store_for  # a CLI subset (``sweep --only``): train it, the stage plots the rest
    run_all(select_jobs(f3.JOBS[section](P), only, section), store_for(section, results), P, desc=section)


SECTIONS = {"f3_regression": _f3, "f3_mnist": _f3, "f3_variants": _f3, "f3_depth": _f3, "f3_vit": _f3}


PER_DATASET = ("ffzero_width", "ffzero_cnn", "foton_depth", "foton_shallow", "ftp_table", "ftp_quantized",
               "ftp_noise")


def _jobs_for(section: str, P: dict, datasets: list[str]) -> list[dict]:
    from . import ffzero, foton, ftp
    per_dataset = {"ffzero_width": ffzero.width_jobs, "ffzero_cnn": ffzero.cnn_jobs, "foton_depth": foton.depth_jobs,
                   "foton_shallow": foton.shallow_jobs, "ftp_table": ftp.table_jobs,
                   "ftp_quantized": ftp.quantized_jobs, "ftp_noise": ftp.noise_jobs}
    if section in PER_DATASET:
        return [j for ds in datasets for j in per_dataset[section](P, ds)]
    return {"ffzero_regression": ffzero.regression_jobs, "foton_alignment": foton.alignment_jobs,
            "ftp_alignment": ftp.alignment_jobs}[section](P)


def jobs(section: str, P: dict) -> list[dict]:
    """Every run of a figure section (all its datasets), without training: for counting and validation."""
    if section in SECTIONS and SECTIONS[section] is _f3:
        from . import f3
        return f3.JOBS[section](P)
    return _jobs_for(section, P, P["datasets"] if section in PER_DATASET else [])


def parse_only(items: list[str]) -> dict[str, list[str]]:
    """``sweep --only COLUMN=VALUE[,VALUE…]`` (repeatable): {column: allowed values}; one clear line otherwise."""
    only: dict[str, list[str]] = {}
    for it in items:
        col, eq, vals = it.partition("=")
        if not eq or not col or not vals:
            raise ConfigError(f"--only {it!r}: write COLUMN=VALUE or COLUMN=VALUE,VALUE (e.g. seed=2 or seed=2,3)")
        only.setdefault(col, []).extend(v for v in vals.split(",") if v != "")
    return only


def select_jobs(jobs: list[dict], only: dict | None, section: str) -> list[dict]:
    """The jobs whose every column in ``only`` ({column: value or list of values}) equals one of its values;
    a selection that matches no job is an error naming the values the section has."""
    if not only:
        return jobs
    want = {k: [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for k, v in only.items()}
    sel = [j for j in jobs if all(str(j.get(k)) in vs for k, vs in want.items())]
    if not sel:
        have = {k: sorted({str(j[k]) for j in jobs if k in j}) for k in want}
        raise ConfigError(f"--only {want}: no run of {section} matches; its values: {have}")
    return sel


def _sweep(section, P, results, only=None):
    """Train a section's runs without the notebook, e.g. in the background on a GPU machine
    (``python -m repro sweep foton_depth --only dataset=mnist``); the stage's notebook then finds them all
    in the run cache. Per-dataset sections put each dataset's runs in ``results/<section>/<dataset>``."""
    from .common import run_all, store_for
    only = dict(only or {})
    if section in PER_DATASET:
        ds = only.pop("dataset", P["datasets"])
        datasets = list(ds) if isinstance(ds, (list, tuple)) else [ds]
    else:
        datasets = []
    jobs = select_jobs(_jobs_for(section, P, datasets), only, section)
    by_store: dict[str, list] = {}
    for j in jobs:
        sub = f"{section}/{j['dataset']}" if section in PER_DATASET else section
        by_store.setdefault(sub, []).append(j)
    for sub, js in by_store.items():
        run_all(js, store_for(sub, results), P, desc=sub)


SECTIONS.update({s: _sweep for s in ("ffzero_width", "ffzero_cnn", "ffzero_regression", "foton_depth", "foton_shallow",
                                     "foton_alignment", "ftp_table", "ftp_quantized", "ftp_noise",
                                     "ftp_alignment")})
