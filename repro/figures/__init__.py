"""Sweep definitions and plots, one module per paper. Each figure section of ``params.yaml`` maps to a
function here that builds the run configs, trains what is not cached, and returns tidy DataFrames."""


def _f3(section, P, results, only=None):
    from . import f3
    return f3.run(section, P, results, only=only)


SECTIONS = {"f3_regression": _f3, "f3_mnist": _f3, "f3_variants": _f3, "f3_depth": _f3, "f3_vit": _f3}


def _ffzero(section, P, results, only=None):
    """Sweep an FFzero section in the background (``python -m repro sweep ffzero_width --only dataset=mnist``)."""
    from . import ffzero
    only = dict(only or {})
    if section == "ffzero_regression":
        jobs = ffzero.regression_jobs(P)
    else:
        datasets = [only.pop("dataset")] if "dataset" in only else P["datasets"]
        jobs = [j for ds in datasets for j in (ffzero.width_jobs(P, ds) if section == "ffzero_width"
                                                else ffzero.cnn_jobs(P, ds))]
    jobs = [j for j in jobs if all(str(j.get(k)) == v for k, v in only.items())]
    from .common import run_all, store_for
    by_store = {}
    for j in jobs:
        sub = section if section == "ffzero_regression" else f"{section}/{j['dataset']}"
        by_store.setdefault(sub, []).append(j)
    for sub, js in by_store.items():
        run_all(js, store_for(sub, results), P, desc=sub)


SECTIONS.update({"ffzero_width": _ffzero, "ffzero_cnn": _ffzero, "ffzero_regression": _ffzero})
