"""The papers' full scale: ``params.spec.yaml`` lists, as ``section.key: value``, every setting that
``params.yaml`` reduces to fit 2 CPU cores. ``python -m repro spec`` runs ``dvc exp run -S section.key=value …``
with all of them (DVC rewrites params.yaml, keeping its comments, and re-runs the stages; the run cache keeps
every finished run); ``--print`` shows the runs per section at each scale and the command, and runs nothing;
``--write FILE`` writes the spec-scale params to FILE for ``python -m repro sweep <section> --params FILE``, and
``--land DIR`` copies the finished spec-scale runs of such a sweep (``--results DIR``) into ``results/spec_scale``."""
from __future__ import annotations

import copy
import shlex
import subprocess
from pathlib import Path

import yaml

from .models import ConfigError

SPEC_FILE = "params.spec.yaml"


def load_spec(path: str | Path = SPEC_FILE) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"spec file {str(p)!r} does not exist")
    spec = yaml.safe_load(p.read_text()) or {}
    if not isinstance(spec, dict) or not all(isinstance(k, str) and "." in k for k in spec):
        raise ConfigError(f"{p}: every entry must be 'section.key: value' (a dotted key, as `dvc exp run -S`)")
    return spec


def apply(params: dict, spec: dict) -> dict:
    """``params`` (all of params.yaml) with the spec's values set; a key params.yaml lacks is an error
    (DVC would add it silently, and a typo would leave the reduced value in place)."""
    out = copy.deepcopy(params)
    for key, value in spec.items():
        d = out
        *head, last = key.split(".")
        for i, h in enumerate(head):
            if not isinstance(d, dict) or h not in d:
                raise ConfigError(f"{SPEC_FILE}: {key!r}: {'.'.join(head[:i + 1])!r} is not in params.yaml")
            d = d[h]
        if not isinstance(d, dict) or last not in d:
            raise ConfigError(f"{SPEC_FILE}: {key!r} is not in params.yaml")
        d[last] = copy.deepcopy(value)
    return out


def _hydra(v) -> str:
    """A value in Hydra's override grammar (what ``dvc exp run -S`` parses)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_hydra(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_hydra(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"{SPEC_FILE}: cannot pass {v!r} to dvc -S")


def overrides(spec: dict) -> list[str]:
    """``-S`` values for ``dvc exp run``. Hydra merges a mapping into the one there (``{}`` would change
    nothing), so a mapping is deleted and added again: ``~k`` then ``+k={…}``."""
    out = []
    for k, v in spec.items():
        out += [f"~{k}", f"+{k}={_hydra(v)}"] if isinstance(v, dict) else [f"{k}={_hydra(v)}"]
    return out


def _section_configs(params: dict) -> dict[str, dict[str, dict]]:
    """Per figure section in ``params``: its distinct runs' configs by key (every dataset, cached or not)."""
    from .figures import SECTIONS
    return {section: {k: j["config"] for k, j in stage_jobs(params, section).items()}
            for section, P in params.items() if section in SECTIONS and isinstance(P, dict)}


def run_counts(params: dict) -> dict[str, tuple[int, int]]:
    """Per figure section (every dataset, cached or not): distinct runs, and their epochs in all (a run's
    epochs as configured: a layer-wise rule trains that many per layer; a diverging run stops early)."""
    return {s: (len(c), sum(x["epochs"] for x in c.values())) for s, c in _section_configs(params).items()}


def finished_runs(params: dict, results: str | Path = "results") -> dict[str, int]:
    """Per figure section: how many of its distinct runs already have a record in some run store under
    ``results`` (a stage's own, another stage's, or ``results/spec_scale``'s runs trained ahead) — runs a
    sweep at this scale copies instead of training. The patterns are the stores ``figures.common.store_for``
    shares (kept here, not shared from there: common.py is a dependency of every stage; a test ties the two)."""
    have = _stored_keys(results)
    return {s: len(have & set(c)) for s, c in _section_configs(params).items()}


def _stored_keys(results: str | Path) -> set[str]:
    """The keys of every run record in a store under ``results`` (the patterns ``store_for`` shares)."""
    return {p.stem for pat in ("*/runs/*.json", "*/*/runs/*.json") for p in Path(results).glob(pat)}


def stage_jobs(params: dict, section: str, dataset: str | None = None) -> dict[str, dict]:
    """The jobs of one stage (a section, or a per-dataset section's ``dataset``) under ``params``, by run key."""
    from .figures import jobs
    from .train import run_key
    return {run_key(j["config"]): j for j in jobs(section, {**params[section], "device": "cpu", "workers": 1})
            if dataset is None or j.get("dataset") == dataset}


def land(full: dict, src: str | Path, results: str | Path = "results", dry: bool = False) -> dict[str, list[str]]:
    """Move spec-scale runs trained ahead into the stores every stage shares: each record in a sweep's results
    folder ``src`` (``python -m repro sweep <section> --params <spec-scale params> --results src``:
    ``src/<section>/runs`` or ``src/<section>/<dataset>/runs``) that is a job of its section at the spec's scale
    (``full``: the spec-scale params) and is in no store under ``results`` yet is copied to
    ``results/spec_scale/<section>[@<dataset>]/runs`` — the check ``tests/test_spec.py`` makes of that folder.
    Folders that are not a section's store (e.g. links to other results) are passed over. Returns the lines
    printed, by outcome: ``landed`` (or, with ``dry``, would land), ``not_spec`` (another scale's run, or a
    record whose name is not its config's key: left where it is), ``already`` (some store has it)."""
    import json
    import shutil
    from .figures import PER_DATASET, SECTIONS
    from .train import run_key
    have = _stored_keys(results)
    out: dict[str, list[str]] = {"landed": [], "not_spec": [], "already": []}
    stores = sorted({*Path(src).glob("*/runs"), *Path(src).glob("*/*/runs")})
    for store in stores:
        parts = store.relative_to(src).parts[:-1]
        section, dataset = parts[0], (parts[1] if len(parts) == 2 else None)
        if section not in SECTIONS or not isinstance(full.get(section), dict) or \
                (dataset is None) == (section in PER_DATASET):
            continue
        want = stage_jobs(full, section, dataset)
        stage = section if dataset is None else f"{section}@{dataset}"
        dst = Path(results) / "spec_scale" / stage / "runs"
        for f in sorted(store.glob("*.json")):
            try:
                rec = json.loads(f.read_text())
                ok = rec.get("key") == f.stem == run_key(rec["config"]) and f.stem in want
            except (ValueError, KeyError, TypeError, AttributeError):
                rec, ok = None, False  # not a run record (e.g. cut short while written)
            cols = {k: v for k, v in want.get(f.stem, {}).items() if k not in ("config", "dataset")}
            if not ok:
                out["not_spec"].append(f"{f}: not a job of {stage} at the spec's scale; left")
                continue
            if f.stem in have:
                out["already"].append(f"{f}: already in a store under {results}")
                continue
            err = (rec.get("summary") or {}).get("final_test_error")
            out["landed"].append(f"{dst / f.name}: {cols} {rec.get('status')}"
                                 + (f", final test error {err:.2f} %" if isinstance(err, (int, float)) else ""))
            if not dry:
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst / f.name)
    return out


def main(params_file: str = "params.yaml", spec_file: str = SPEC_FILE, print_only: bool = False,
         dvc_args: list[str] | None = None, write: str | None = None, land_from: str | None = None) -> int:
    params = yaml.safe_load(Path(params_file).read_text())
    spec = load_spec(spec_file)
    full = apply(params, spec)
    if land_from:  # spec-scale runs trained ahead in another results folder → results/spec_scale
        out = land(full, land_from, Path(params_file).resolve().parent / "results", dry=print_only)
        for line in out["not_spec"] + out["landed"]:
            print(line)
        print(f"{'would land' if print_only else 'landed'} {len(out['landed'])}; {len(out['already'])} already in a "
              f"store; {len(out['not_spec'])} not spec-scale jobs, left")
        return 0
    if write:  # a params file at spec scale for `python -m repro sweep <section> --params …` (no DVC)
        Path(write).write_text(f"# {params_file} at the papers' scale ({spec_file}); written by python -m repro "
                               f"spec --write\n" + yaml.safe_dump(full, sort_keys=False, allow_unicode=True))
        print(f"wrote {write}")
        return 0
    cmd = ["dvc", "exp", "run", *[a for o in overrides(spec) for a in ("-S", o)], *(dvc_args or [])]
    if print_only:
        now, then = run_counts(params), run_counts(full)
        done = finished_runs(full, Path(params_file).resolve().parent / "results")
        touched = sorted({k.split(".")[0] for k in spec})
        w = max(map(len, touched))
        print(f"{'section':<{w}}  {'runs (epochs) now':>20}  {'at spec scale':>20}  {'of those finished':>17}")
        for s in touched:
            (n0, e0), (n1, e1) = now.get(s, (0, 0)), then.get(s, (0, 0))
            print(f"{s:<{w}}  {f'{n0} ({e0:,})':>20}  {f'{n1} ({e1:,})':>20}  {done.get(s, 0):>17}")
        print(shlex.join(cmd))
        return 0
    return subprocess.call(cmd)
