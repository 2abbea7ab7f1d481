"""params.spec.yaml and ``python -m repro spec``: the papers' full scale as ``dvc exp run -S`` overrides."""
from pathlib import Path

import pytest
import yaml

from repro import spec as S
from repro.models import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_every_spec_entry_is_a_reduced_key_of_params_and_every_section_builds_at_spec_scale():
    from repro.figures import jobs
    from repro.train import normalize_config
    spec = S.load_spec(ROOT / S.SPEC_FILE)
    params = _params()
    full = S.apply(params, spec)
    for key, value in spec.items():
        here, there = params, full
        for part in key.split("."):
            here, there = here[part], there[part]
        assert there == value
        assert here != value, f"{key}: params.yaml already has the spec's value; drop it from {S.SPEC_FILE}"
    for section in {k.split(".")[0] for k in spec}:
        js = jobs(section, {**full[section], "device": "cpu", "workers": 1})
        assert js and all(normalize_config(j["config"]) for j in js)
    assert params == _params()  # apply() copies


def test_dvc_applies_the_overrides_exactly_as_validated(tmp_path):
    """What ``dvc exp run -S …`` writes into params.yaml (DVC's own Hydra code) equals ``apply``: a mapping is
    replaced, not merged (``~k``, ``+k=…``), lists and nulls arrive as such, and the comments stay."""
    from dvc.utils.hydra import apply_overrides
    spec = S.load_spec(ROOT / S.SPEC_FILE)
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(p, S.overrides(spec))
    assert yaml.safe_load(p.read_text()) == S.apply(_params(), spec)
    assert "# spec: 3 seeds × 100 epochs; 1 × 2 fit on 2 CPU cores here" in p.read_text()  # an overridden key's comment
    assert S.overrides({"a.b": {}, "a.c": [1, "x y"], "a.d": None}) == ["~a.b", "+a.b={}", "a.c=[1,'x y']", "a.d=null"]


def test_a_key_params_lacks_or_a_flat_entry_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="'ftp_table.epoch' is not in params.yaml"):
        S.apply(_params(), {"ftp_table.epoch": 100})
    with pytest.raises(ConfigError, match="'nosuch' is not in params.yaml"):
        S.apply(_params(), {"nosuch.epochs": 100})
    bad = tmp_path / "s.yaml"
    bad.write_text("epochs: 100\n")
    with pytest.raises(ConfigError, match="dotted key"):
        S.load_spec(bad)


def test_cli_prints_the_runs_and_the_command_or_hands_it_to_dvc(capsys, monkeypatch):
    from repro.__main__ import main
    assert main(["spec", "--print", "--params", str(ROOT / "params.yaml"), "--spec", str(ROOT / S.SPEC_FILE)]) == 0
    out = capsys.readouterr().out
    assert "ftp_quantized" in out and "dvc exp run -S" in out and "'ftp_table.milestones=[60,90]'" in out
    calls = []
    monkeypatch.setattr(S.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["spec", "--params", str(ROOT / "params.yaml"), "--spec", str(ROOT / S.SPEC_FILE), "--queue"]) == 0
    assert calls[0][:3] == ["dvc", "exp", "run"] and calls[0][-1] == "--queue" and "f3_vit.n_train=null" in calls[0]
    with pytest.raises(SystemExit):
        main(["check", "--queue"])  # other commands still reject unknown arguments


def test_write_gives_a_params_file_for_sweeps_at_spec_scale(tmp_path):
    from repro.__main__ import main
    from repro.figures.common import load_params
    out = tmp_path / "p.yaml"
    assert main(["spec", "--params", str(ROOT / "params.yaml"), "--spec", str(ROOT / S.SPEC_FILE),
                 "--write", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == S.apply(_params(), S.load_spec(ROOT / S.SPEC_FILE))
    assert load_params("ftp_quantized", out)["levels"] == ["weights", "weights+activations", "full"]


def test_runs_trained_ahead_at_spec_scale_are_jobs_of_that_scale():
    """results/spec_scale/<stage>@<dataset>/runs (or <stage>/runs) holds spec-scale runs trained before their
    section was switched over (results/spec_scale/README.md): every record keeps its key and is a job of its
    stage at the spec's scale — a record that is not would never be picked up by any sweep."""
    import json
    from repro.train import run_key
    full = S.apply(_params(), S.load_spec(ROOT / S.SPEC_FILE))
    for store in sorted((ROOT / "results" / "spec_scale").glob("*/runs")):
        section, _, dataset = store.parent.name.partition("@")  # `<stage>` for a stage without datasets
        want = S.stage_jobs(full, section, dataset or None)
        for p in sorted(store.glob("*.json")):
            rec = json.loads(p.read_text())
            assert run_key(rec["config"]) == rec["key"] == p.stem, p
            assert p.stem in want, f"{p}: not a job of {section} ({dataset}) at the spec's scale"


def test_print_counts_the_spec_scale_runs_already_finished_in_any_store(tmp_path):
    from repro.figures import jobs
    from repro.train import run_key
    full = S.apply(_params(), S.load_spec(ROOT / S.SPEC_FILE))
    js = jobs("ftp_quantized", {**full["ftp_quantized"], "device": "cpu", "workers": 1})
    cfgs = [j["config"] for j in js if j["bits"] == 4][:2]
    assert S.finished_runs(full, tmp_path)["ftp_quantized"] == 0
    for i, c in enumerate(cfgs):  # a stage's own store, and one trained ahead (results/spec_scale)
        d = tmp_path / ("ftp_quantized/mnist/runs" if i == 0 else "spec_scale/ftp_quantized@mnist/runs")
        d.mkdir(parents=True)
        (d / f"{run_key(c)}.json").write_text("{}")
    (tmp_path / "spec_scale" / "x.json").write_text("{}")  # not in a run store
    assert S.finished_runs(full, tmp_path)["ftp_quantized"] == 2
    # "finished" means what a sweep's store would copy in: the same stores store_for shares
    from repro.figures.common import store_for
    assert all(store_for("elsewhere", tmp_path).get(c) is not None for c in cfgs)


def test_land_copies_a_sweeps_spec_scale_runs_into_the_shared_store_and_nothing_else(tmp_path, capsys):
    """``python -m repro spec --land DIR``: the finished runs of ``sweep --params <spec scale> --results DIR``
    go to ``results/spec_scale/<stage>[@<dataset>]/runs`` (what ``test_runs_trained_ahead…`` checks) — a
    params-scale run, a record not named by its key, a broken file and a run some store already has do not."""
    import json
    from repro.__main__ import main
    from repro.figures import jobs
    from repro.train import run_key
    params = _params()
    full = S.apply(params, S.load_spec(ROOT / S.SPEC_FILE))

    def cfgs(P, pred):
        return [j["config"] for j in jobs("ftp_table", {**P["ftp_table"], "device": "cpu", "workers": 1}) if pred(j)]
    spec_cnn = cfgs(full, lambda j: j["dataset"] == "mnist" and j["method"] == "DRTP CNN")[:2]
    small = cfgs(params, lambda j: j["dataset"] == "mnist" and j["method"] == "BP")[0]
    assert run_key(small) not in {run_key(c) for c in cfgs(full, lambda j: True)}
    root, src = tmp_path / "repo", tmp_path / "sweep"
    (root / "results" / "ftp_table" / "mnist" / "runs").mkdir(parents=True)
    store = src / "ftp_table" / "mnist" / "runs"
    store.mkdir(parents=True)
    (src / "other_link" / "mnist" / "runs").mkdir(parents=True)  # not a section's store: passed over
    (src / "other_link" / "mnist" / "runs" / "x.json").write_text("{}")

    def record(c, name=None, where=store):
        k = run_key(c)
        (where / f"{name or k}.json").write_text(json.dumps({"key": k, "config": c, "status": "ok",
                                                             "summary": {"final_test_error": 2.0}}))
        return k
    new = record(spec_cnn[0])
    old = record(spec_cnn[1])
    record(spec_cnn[1], where=root / "results" / "ftp_table" / "mnist" / "runs")  # the stage has it already
    record(small)
    record(spec_cnn[0], name="0123456789abcdef")
    (store / "broken.json").write_text('{"key": ')
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    args = ["spec", "--params", str(root / "params.yaml"), "--spec", str(ROOT / S.SPEC_FILE), "--land", str(src)]
    assert main(args + ["--print"]) == 0
    assert "would land 1; 1 already in a store; 3 not spec-scale jobs, left" in capsys.readouterr().out
    assert not (root / "results" / "spec_scale").exists()  # --print copies nothing
    assert main(args) == 0
    out = capsys.readouterr().out
    dst = root / "results" / "spec_scale" / "ftp_table@mnist" / "runs"
    assert sorted(p.name for p in dst.iterdir()) == [f"{new}.json"] and old != new
    assert (dst / f"{new}.json").read_bytes() == (store / f"{new}.json").read_bytes()
    assert "'method': 'DRTP CNN'" in out and "final test error 2.00 %" in out and "landed 1;" in out
    assert main(args) == 0 and "landed 0; 2 already in a store" in capsys.readouterr().out  # idempotent
