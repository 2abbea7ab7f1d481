"""Engine: determinism, run cache, resume after a kill, divergence, weights, bad parameters."""
from pathlib import Path
import json

import pytest
import torch

from repro import train as T
from repro.models import ConfigError
from repro.train import RunStore, normalize_config, run_key, sweep

from conftest import tiny_data


def cfg(rule=None, **kw):
    c = {"dataset": {"name": "mnist", "n_train": 64, "n_test": 32},
         "model": {"width": 8, "depth": 2}, "rule": rule or {"name": "f3"},
         "optim": {"name": "adam", "lr": 1e-2}, "epochs": 2, "batch_size": 16, "seed": 3}
    c.update(kw)
    return c


@pytest.fixture
def tiny(monkeypatch):
    """Every run trains on the same tiny synthetic classification set (no files needed)."""
    d = tiny_data(n_in=784, n_out=10)
    calls = []

    def fake_load(c, dev):
        calls.append(c)
        return d
    monkeypatch.setattr(T, "load_data", fake_load)
    monkeypatch.setattr(T, "_steps", lambda c: 8)
    return calls


def metrics(rec):
    """Per-epoch metrics without wall-clock times."""
    return T.history_digits(rec["history"])


@pytest.mark.parametrize("rule", [{"name": "bp"}, {"name": "dfa"}, {"name": "f3"}, {"name": "pepita"}])
def test_same_config_gives_bitwise_equal_metrics(tiny, rule):
    c = cfg(rule) if rule["name"] != "pepita" else cfg(rule, model={"width": 8, "act": "relu", "loss": "ce", "bias": False})
    a, b = metrics(T.train(c).record), metrics(T.train(c).record)
    assert a == b
    c2 = dict(c, seed=4)
    assert metrics(T.train(c2).record) != a


def test_f3_epoch_one_equals_drtp(tiny):
    ra = T.train(cfg({"name": "f3"}, epochs=1))
    rb = T.train(cfg({"name": "drtp"}, epochs=1))
    for p, q in zip(ra.model.parameters(), rb.model.parameters()):
        assert torch.equal(p, q)
    r2a = T.train(cfg({"name": "f3"}, epochs=2)).record["history"][2]
    r2b = T.train(cfg({"name": "drtp"}, epochs=2)).record["history"][2]
    assert r2a["test_loss"] != r2b["test_loss"]  # and they separate afterwards


def test_run_key_covers_the_full_config():
    base = cfg()
    assert run_key(base) == run_key(json.loads(json.dumps(base)))
    assert run_key(base) == run_key({**base, "tags": {"note": "ignored"}})
    for change in ({"seed": 4}, {"epochs": 3}, {"rule": {"name": "f3", "error_info": "delayed_loss"}},
                   {"optim": {"name": "adam", "lr": 2e-2}}, {"dataset": {"name": "mnist", "n_train": 65}}):
        assert run_key({**base, **change}) != run_key(base)
    assert run_key(base) == run_key({**base, "model": {"width": 8, "depth": 2, "act": "tanh"}})  # a default


def test_cache_skips_finished_runs_and_saves_weights(tiny, tmp_path):
    store = RunStore(tmp_path / "runs", tmp_path / "w")
    cs = [cfg(seed=s) for s in (1, 2)]
    recs = sweep(cs, store, progress=False)
    n = len(tiny)
    assert all(r["status"] == "ok" for r in recs) and n == 2
    assert sweep(cs, store, progress=False) == recs and len(tiny) == n  # nothing retrained
    model, rule_state = store.load_weights(cs[0])
    trained = T.train(cs[0]).model
    for p, q in zip(model.parameters(), trained.parameters()):
        assert torch.equal(p, q)
    assert set(rule_state) == {"B0", "B1"}


def test_a_run_finished_in_another_stage_is_copied_not_retrained(tiny, tmp_path):
    from repro.figures.common import store_for
    a = store_for("fig_a", tmp_path)
    rec = sweep([cfg(seed=1)], a, progress=False)[0]
    n = len(tiny)
    b = store_for("fig_b/mnist", tmp_path)  # another stage (a per-dataset one) shares fig_a's runs
    assert sweep([cfg(seed=1)], b, progress=False)[0] == rec and len(tiny) == n
    key = run_key(cfg(seed=1))
    assert (b.runs / f"{key}.json").is_file() and (b.weights / f"{key}.pt").is_file()  # self-contained
    assert sweep([cfg(seed=2)], b, progress=False)[0]["status"] == "ok" and len(tiny) == n + 1
    # a fresh clone: the other stage's record is in git, its weights are not — the record alone is copied
    # (no retraining), and the weights are retrained, bitwise, only when a figure loads them
    (a.weights / f"{key}.pt").unlink()
    c = store_for("fig_c", tmp_path)
    assert sweep([cfg(seed=1)], c, progress=False)[0] == rec and len(tiny) == n + 1
    assert (c.runs / f"{key}.json").is_file() and not (c.weights / f"{key}.pt").exists()
    model, _ = c.load_weights(cfg(seed=1))
    assert len(tiny) == n + 2 and (c.weights / f"{key}.pt").is_file()
    for p, q in zip(model.parameters(), b.load_weights(cfg(seed=1))[0].parameters()):
        assert torch.equal(p, q)


def test_killed_sweep_resumes_without_redoing_or_corrupting(tiny, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs", tmp_path / "w")
    cs = [cfg(seed=s) for s in (1, 2, 3)]
    real = T.train
    state = {"n": 0}

    def dying(c, **kw):
        state["n"] += 1
        if state["n"] == 2:
            raise KeyboardInterrupt  # the process is killed while training the second run
        return real(c, **kw)
    monkeypatch.setattr(T, "train", dying)
    with pytest.raises(KeyboardInterrupt):
        sweep(cs, store, progress=False)
    (store.runs / f".{run_key(cs[1])}.json.tmp").write_text("{partial")  # debris of a kill
    assert store.get(cs[0]) is not None and store.get(cs[1]) is None
    monkeypatch.setattr(T, "train", real)
    before = len(tiny)
    recs = sweep(cs, store, progress=False)
    assert len(tiny) - before == 2 and all(r["status"] == "ok" for r in recs)


def test_diverging_run_is_recorded_and_sweep_goes_on(tiny, tmp_path):
    store = RunStore(tmp_path / "runs", tmp_path / "w")
    bad = cfg({"name": "bp"}, optim={"name": "sgd", "lr": 1e30}, model={"width": 8, "loss": "mse"}, epochs=5)
    good = cfg(seed=9)
    r_bad, r_good = sweep([bad, good], store, progress=False)
    assert r_bad["status"] == "diverged" and r_bad["summary"]["epochs_done"] < 5
    assert r_good["status"] == "ok"


@pytest.mark.parametrize("change,match", [
    ({"rule": {"name": "backprop"}}, "rule.name='backprop'"),
    ({"rule": {"name": "f3", "error_info": "delayed"}}, "rule.error_info='delayed'"),
    ({"rule": {"name": "dfa", "feedback_init": "gauss"}}, "rule.feedback_init='gauss'"),
    ({"rule": {"name": "dfa", "lr": 1}}, "unknown parameter"),
    ({"optim": {"name": "adam", "lr": -1}}, "optim.lr=-1"),
    ({"optim": {"name": "rmsprop"}}, "optim.name='rmsprop'"),
    ({"epochs": -1}, "epochs=-1"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"model": {"act": "swish"}}, "act='swish'"),
    ({"model": {"width": 0}}, "model.width=0"),
    ({"lr": 1}, "unknown config key"),
])
def test_bad_parameters_give_one_clear_line(tiny, change, match):
    with pytest.raises(ConfigError, match=match) as ei:
        T.train(cfg(**change) if "rule" not in change else cfg(change["rule"]))
    assert "\n" not in str(ei.value)


def test_a_validation_split_is_held_out_of_the_training_set_and_measured_every_epoch(tiny):
    """``dataset.n_val``: the last n training samples become a validation split, the same for every seed,
    measured each epoch beside the untouched test split; 0 (the default) leaves the run and its key as they were."""
    from repro.data import Data
    d = tiny_data(n_in=784, n_out=10)
    h = d.hold_out(16)
    assert torch.equal(h.x_train, d.x_train[:48]) and torch.equal(h.x_val, d.x_train[48:])
    assert torch.equal(h.labels_val, d.labels_train[48:]) and torch.equal(h.x_test, d.x_test)
    assert isinstance(h.to("cpu"), Data) and torch.equal(h.subset(8, 8).x_val, h.x_val)
    base = cfg({"name": "bp"})
    held = {**base, "dataset": {**base["dataset"], "n_val": 16}}
    assert run_key({**base, "dataset": {**base["dataset"], "n_val": 0}}) == run_key(base)  # old keys stand
    assert run_key(held) != run_key(base)
    rec = T.train(held).record
    assert all("val_error" in r and "val_loss" in r for r in rec["history"])
    assert rec["summary"]["final_val_error"] == rec["history"][-1]["val_error"]
    assert rec["summary"]["best_val_error"] == min(r["val_error"] for r in rec["history"][1:])
    # the held-out run is the run on the first 48 samples, with validation measured beside it
    seen = T.train(base, data=Data(**{**d.__dict__, "x_train": d.x_train[:48], "y_train": d.y_train[:48],
                                      "labels_train": d.labels_train[:48]})).record
    assert metrics(seen) == [{k: v for k, v in r.items() if not k.startswith("val_")} for r in metrics(rec)]
    assert "final_val_error" not in T.train(base).record["summary"]
    for bad, match in ((64, "between 1 and 63"), (-1, "non-negative integer"), (True, "non-negative integer")):
        with pytest.raises(ConfigError, match=f"dataset.n_val={bad}") as ei:
            T.train({**base, "dataset": {**base["dataset"], "n_val": bad}})
        assert match in str(ei.value) and "\n" not in str(ei.value)


def test_bad_device():
    with pytest.raises(ConfigError, match="device="):
        T.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            T.resolve_device("cuda")


def test_cli_reports_bad_input_in_one_line(capsys):
    from repro.__main__ import main
    assert main(["sweep", "no_such_section"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: section='no_such_section'") and err.count("\n") == 1


def test_cli_sweep_passes_restore_weights_to_the_section(monkeypatch):
    from repro.__main__ import main
    from repro import figures
    seen = []
    monkeypatch.setitem(figures.SECTIONS, "ftp_table", lambda section, P, results, only=None: seen.append(
        (P["restore_weights"], only)))
    assert main(["sweep", "ftp_table", "--only", "dataset=mnist", "--restore-weights"]) in (0, None)
    assert main(["sweep", "ftp_table", "--only", "dataset=mnist"]) in (0, None)
    assert seen == [(True, {"dataset": ["mnist"]}), (False, {"dataset": ["mnist"]})]


def test_cli_sweep_only_takes_alternatives_and_names_an_empty_or_bad_selection(monkeypatch, capsys, tmp_path):
    """``--only COL=A,B`` keeps the jobs whose column is A or B (columns are ANDed); a selection of no job, or an
    --only without '=', is one line naming what the section has."""
    from repro.__main__ import main
    from repro.figures import common
    trained = []
    monkeypatch.setattr(common, "run_all", lambda jobs, store, P, desc: trained.extend(jobs) or [])
    args = ["sweep", "ftp_quantized", "--params", "params.smoke.yaml", "--results", str(tmp_path)]
    assert main(args + ["--only", "dataset=mnist", "--only", "method=BP,FTP (output step)", "--only", "seed=1",
                        "--only", "level=full"]) in (0, None)
    assert trained and {j["method"] for j in trained} == {"BP", "FTP (output step)"}
    assert {(j["seed"], j["level"], j["dataset"]) for j in trained} == {(1, "full", "mnist")}
    assert main(args + ["--only", "dataset=mnist", "--only", "method=XX"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run of ftp_quantized matches" in err and "'BP'" in err
    assert main(args + ["--only", "seed"]) == 2
    assert "write COLUMN=VALUE" in capsys.readouterr().err
    trained.clear()  # an F³ section (its own entry point): the same selection
    assert main(["sweep", "f3_regression", "--params", "params.smoke.yaml", "--results", str(tmp_path),
                 "--only", "algorithm=BP,DFA", "--only", "dataset=wine_quality"]) in (0, None)
    assert {(j["algorithm"], j["dataset"]) for j in trained} == {("BP", "wine_quality"), ("DFA", "wine_quality")}


def test_cli_sweep_threads_reach_the_sweep_and_bad_counts_are_one_line(monkeypatch, capsys):
    """``--threads N`` (else params' ``threads``, REPRO_THREADS, 1) is each run's torch thread count."""
    from repro.__main__ import main
    from repro import figures
    from repro.figures.common import load_params
    root = Path(__file__).resolve().parents[1]
    seen = []
    monkeypatch.setitem(figures.SECTIONS, "ftp_table", lambda section, P, results, only=None: seen.append(P["threads"]))
    monkeypatch.delenv("REPRO_THREADS", raising=False)
    assert main(["sweep", "ftp_table", "--threads", "2"]) in (0, None) and main(["sweep", "ftp_table"]) in (0, None)
    monkeypatch.setenv("REPRO_THREADS", "3")
    assert main(["sweep", "ftp_table"]) in (0, None) and seen == [2, 1, 3]
    assert load_params("ftp_table", root / "params.yaml")["threads"] == 3
    with pytest.raises(ConfigError, match="threads=0 must be a positive integer"):
        sweep([cfg()], RunStore(Path("/nonexistent/r"), Path("/nonexistent/w")), threads=0, progress=False)


def test_alignment_is_one_for_bp_and_measured_on_pre_update_weights(tiny):
    rec = T.train(cfg({"name": "bp"}, align_every=1, epochs=1)).record
    assert all(abs(c - 1) < 1e-5 for c in rec["history"][1]["align_cos"])
    rec = T.train(cfg({"name": "dfa"}, align_every=2, epochs=1)).record
    cs = rec["history"][1]["align_cos"]
    assert abs(cs[-1] - 1) < 1e-5 and all(abs(c) < 1 - 1e-3 for c in cs[:-1])  # output layer exact
    assert run_key(cfg(align_every=2)) != run_key(cfg())


def test_alignment_uses_the_rules_dropout_masks():
    """FOTON, linear orthogonal net, dropout on: BP with the same masks is matched exactly."""
    from repro.models import MLP
    from repro.rules import make_rule
    from repro.rules.base import Batch
    torch.manual_seed(0)
    m = MLP([32, 32, 32, 10], act="identity", loss="ce", bias=False, init="orthogonal")
    r = make_rule({"name": "foton", "keep": 0.5})
    r.setup(m, 10)
    for p in m.parameters():
        p.requires_grad_(False)
    x = torch.randn(8, 32)
    t = torch.nn.functional.one_hot(torch.randint(0, 10, (8,)), 10).float()
    out = r.step(m, Batch(torch.arange(8), x, t))
    cs = T.bp_alignment(m, Batch(torch.arange(8), x, t), out.extras["masks"])
    assert cs[-1] > 1 - 1e-5 and min(cs) > 0.5


def test_committed_runs_keep_their_keys():
    """Every committed run record re-derives its own key from its stored config with today's code."""
    from pathlib import Path
    recs = sorted(Path(__file__).resolve().parents[1].glob("results/*/runs/*.json"))
    for p in recs[:200]:
        r = json.loads(p.read_text())
        assert run_key(r["config"]) == r["key"] == p.stem, p


@pytest.mark.parametrize("algorithm", ["F3-Error", "DRTP", "BP"])
def test_code_still_reproduces_committed_runs(mirror, monkeypatch, algorithm):
    """The first epochs of a committed paper-scale run come out bitwise equal today (sweeps train with
    one thread per run). Catches any change that silently alters what a cached config computes."""
    from pathlib import Path
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(mirror))
    runs = Path(__file__).resolve().parents[1] / "results" / "f3_regression" / "runs"
    recs = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))] if runs.is_dir() else []
    from repro.rules import rule_config
    want = rule_config(algorithm)
    recs = [r for r in recs if r["config"]["dataset"]["name"] == "wine_quality" and r["config"]["rule"] == want]
    if not recs:
        pytest.skip("no committed wine run for this algorithm")
    rec = recs[0]
    with T.torch_threads(1):
        new = T.train({**rec["config"], "epochs": 2}).record
    for a, b in zip(new["history"], rec["history"][:3]):
        assert (a["epoch"], a["train_loss"], a["test_loss"]) == (b["epoch"], b["train_loss"], b["test_loss"])


def test_background_sweep_of_a_section_fills_the_stage_store(tmp_path, mirror, monkeypatch):
    """`python -m repro sweep <section>` trains into the same store the stage's notebook reads."""
    from repro.figures import SECTIONS
    from repro.figures.common import load_params
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(tmp_path / "data"))
    root = Path(__file__).resolve().parents[1]
    P = {**load_params("foton_shallow", root / "params.smoke.yaml"), "workers": 1, "device": "cpu"}
    SECTIONS["foton_shallow"]("foton_shallow", P, tmp_path / "results", only={"dataset": "mnist", "method": "BP",
                                                                              "seed": "1"})
    assert len(list((tmp_path / "results" / "foton_shallow" / "mnist" / "runs").glob("*.json"))) == 1
    P = {**load_params("ffzero_regression", root / "params.smoke.yaml"), "workers": 1, "device": "cpu"}
    SECTIONS["ffzero_regression"]("ffzero_regression", P, tmp_path / "results",
                                  only={"dataset": "ffzero_function1", "paradigm": "FF+DD", "seed": "1"})
    assert len(list((tmp_path / "results" / "ffzero_regression" / "runs").glob("*.json"))) == 1


def test_work_estimate_orders_runs_by_cost():
    """Parallel sweeps start the costliest runs first; the estimate grows with width, epochs and conv size."""
    small, wide = cfg(), cfg(model={"width": 64, "depth": 2})
    assert 0 < T._work(small) < T._work(wide)
    assert T._work(cfg(epochs=4)) == pytest.approx(2 * T._work(small))
    conv = lambda c: cfg(model={"arch": "cnn", "cnn": {"channels": [c, c]}})
    assert T._work(conv(4)) < T._work(conv(16))
    assert T._work(cfg(dataset={"name": "no_such_set"})) == 0.0  # unknown: scheduled last, never an error


def test_progress_counts_every_phase_of_layerwise_rules():
    """FF trains each weight layer for `epochs`: an MLP has depth + 1 phases, a CNN convs + fc + 1."""
    ff = {"name": "ff"}
    base = cfg(rule=ff, dataset={"name": "mnist", "n_train": 64, "n_test": 32}, batch_size=16, epochs=2)
    assert T._steps(base) == 3 * 2 * 4  # width 8, depth 2 → 3 layers
    assert T._steps({**base, "model": {"widths": [8, 8, 8]}}) == 4 * 2 * 4
    assert T._steps({**base, "model": {"arch": "cnn", "cnn": {"channels": [2, 2], "fc": [5]}}}) == 4 * 2 * 4
    assert T._steps(cfg(dataset={"name": "mnist", "n_train": 64, "n_test": 32}, batch_size=16)) == 2 * 4


RELU = {"width": 16, "depth": 2, "act": "relu", "loss": "ce"}
RESUMABLE = [
    ({"name": "bp"}, {}, {}),
    ({"name": "bp", "keep": 0.8, "ortho_every": 2}, RELU, {}),  # dropout masks + Björck counter
    ({"name": "f3"}, {}, {}),  # per-sample delayed-error buffer
    ({"name": "dfa"}, {}, {"optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "milestones": [3], "gamma": 0.5}}),
    ({"name": "drtp"}, {}, {}),
    ({"name": "llo"}, {}, {}),
    ({"name": "pepita"}, {**RELU, "bias": False}, {}),
    ({"name": "pepita_wm"}, {**RELU, "bias": False}, {}),
    ({"name": "foton", "ortho_every": 2, "ff_every": 3}, {**RELU, "bias": False}, {}),
    ({"name": "ftp", "keep": 1.0}, RELU, {"hardware": {"bits": 4, "weights": True, "write_noise": 0.01}}),
    ({"name": "bp"}, RELU, {"hardware": {"bits": 4, "weights": True, "signals": True, "master_copy": True}}),
    ({"name": "bp_dd"}, {}, {}),
]


def _train_killed_in_epoch(c: dict, ck: Path, epoch: int) -> None:
    """Train ``c`` with a checkpoint after every epoch and kill it in epoch ``epoch`` (at its progress report,
    before that epoch's checkpoint): the checkpoint holds epoch ``epoch - 1``."""
    class Killed(Exception):
        pass
    seen = []

    def kill(_steps):
        seen.append(1)
        if len(seen) == epoch:
            raise Killed
    with pytest.raises(Killed):
        T.train(c, checkpoint=ck, checkpoint_every=1e-9, progress=kill)


@pytest.mark.parametrize("rule,model,extra", RESUMABLE, ids=lambda v: v.get("name", "") if isinstance(v, dict) else "")
def test_a_run_killed_mid_way_resumes_from_its_checkpoint_bitwise(tiny, tmp_path, rule, model, extra):
    """A run killed after epoch 2 of 4 goes on from its checkpoint and ends bitwise equal (history and
    weights) to an uninterrupted run: every piece of state (rule buffers and counters, optimizer,
    scheduler, shuffling and dropout RNG, hardware noise) is saved."""
    c = cfg(rule, model={"width": 8, "depth": 2, **model}, epochs=4, **extra)
    straight = T.train(c)
    ck = tmp_path / "run.ckpt"
    _train_killed_in_epoch(c, ck, 3)
    assert torch.load(ck, weights_only=False)["epoch"] == 2
    resumed = T.train(c, checkpoint=ck, checkpoint_every=1e-9)
    assert resumed.record["env"]["resumed_at_epochs"] == [2]
    n = torch.get_num_threads()
    assert resumed.record["env"]["threads_by_segment"] == [n, n]
    assert metrics(resumed.record) == metrics(straight.record)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_resumed_run_names_each_segments_thread_count(tiny, tmp_path):
    """A run begun on 2 threads and resumed on 1 records both counts (``env.threads_by_segment``; env.threads is
    the last) and says so when described; a checkpoint from before the counts were kept gives None for its
    segments."""
    from repro.train import describe_env, torch_threads
    c = cfg(epochs=3)
    ck = tmp_path / "run.ckpt"
    with torch_threads(2):
        _train_killed_in_epoch(c, ck, 2)
    state = torch.load(ck, weights_only=False)
    assert state["threads"] == 2 and state["segment_threads"] == []
    torch.save({k: v for k, v in state.items() if k not in ("threads", "segment_threads")}, tmp_path / "old.ckpt")
    with torch_threads(1):
        env = T.train(c, checkpoint=ck, checkpoint_every=1e-9).record["env"]
        old = T.train(c, checkpoint=tmp_path / "old.ckpt", checkpoint_every=1e-9).record["env"]
    assert env["resumed_at_epochs"] == [1] and env["threads_by_segment"] == [2, 1] and env["threads"] == 1
    assert "threads by segment 2/1" in describe_env(env)
    assert old["threads_by_segment"] == [None, 1] and "threads by segment ?/1" in describe_env(old)


def test_store_deletes_the_checkpoint_of_a_finished_run_and_ignores_a_foreign_one(tiny, tmp_path):
    store = RunStore(tmp_path / "runs", tmp_path / "weights")
    c, other = cfg(epochs=3), cfg(epochs=3, seed=9)
    ck = store.checkpoint_path(run_key(c))
    with pytest.raises(ZeroDivisionError):
        T.train(other, checkpoint=ck, checkpoint_every=1e-9, progress=lambda k: 1 / 0 if ck.is_file() else None)
    assert ck.is_file()  # holds `other`'s state: must not be resumed as `c`
    rec = T.run_cached(c, store)
    assert "resumed_at_epochs" not in rec["env"]
    assert metrics(rec) == metrics(T.train(c).record)
    assert not ck.exists() and list((tmp_path / "weights").glob("*.ckpt")) == []


def test_bad_checkpoint_interval_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("REPRO_CHECKPOINT_S", "soon")
    with pytest.raises(ConfigError, match="REPRO_CHECKPOINT_S"):
        T.checkpoint_seconds()


def test_an_in_process_sweep_trains_on_the_sweeps_thread_count_not_the_callers(tiny, tmp_path):
    """A sweep trains every run on ``threads`` threads (default 1) — in a worker process, and also in this
    process (one worker, or one pending run), whatever the caller's count, which is restored: a run's digits
    must not depend on how many runs were pending, and two one-worker sweeps on torch's default thread count
    oversubscribe a 2-core machine. The record names the count and the CPU."""
    store = RunStore(tmp_path / "runs", tmp_path / "weights")
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = sweep([cfg(seed=1)], store, progress=False)[0]
        two = sweep([cfg(seed=2)], store, threads=2, progress=False)[0]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    assert one["env"]["threads"] == 1 and two["env"]["threads"] == 2
    assert one["env"]["cpu"] and "gpu" not in one["env"]
    assert one["env"]["cpu_capability"] == T.cpu_capability() == str(torch.backends.cpu.get_cpu_capability())
    assert one["env"]["cpu_capability"] in T.describe_env(one["env"])
    assert T.describe_env(one["env"]).startswith("cpu, ") and "1 thread, host " in T.describe_env(one["env"])


def test_torch_threads_fixes_the_count_inside_and_restores_it_after():
    from repro.train import torch_threads
    old = torch.get_num_threads()
    seen = []

    @torch_threads(1)
    def diag():
        seen.append(torch.get_num_threads())
        raise ValueError("boom")

    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError):
            diag()
        assert seen == [1] and torch.get_num_threads() == 2  # restored even after an exception
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def test_missing_weights_of_a_cached_run_are_retrained_bitwise(tiny, tmp_path, capsys):
    """A fresh clone has the git-tracked run records but not the DVC-cached weights: a figure that loads
    weights retrains the run for them, on the record's thread count, with the same history bitwise."""
    store = RunStore(tmp_path / "runs", tmp_path / "weights")
    c = cfg(seed=1, rule={"name": "dfa"})
    rec = sweep([c], store, progress=False)[0]
    original, _ = store.load_weights(c)
    (tmp_path / "weights" / f"{run_key(c)}.pt").unlink()
    n = len(tiny)
    model, rule_state = store.load_weights(c)
    assert len(tiny) == n + 1  # trained once more
    for p, q in zip(model.parameters(), original.parameters()):
        assert torch.equal(p, q)
    assert set(rule_state) == {"B0", "B1"}
    out = capsys.readouterr().out
    assert "retraining it" in out and "differs" not in out
    assert json.loads(store.path(run_key(c)).read_text()) == rec  # the record is left as it was
    assert store.restore_weights(c) is False and len(tiny) == n + 1  # weights present: nothing to do
    # a record from elsewhere whose history the retrain does not reproduce: said in one line, weights kept
    (tmp_path / "weights" / f"{run_key(c)}.pt").unlink()
    rec["history"][-1]["test_loss"] += 1.0
    store.path(run_key(c)).write_text(json.dumps(rec))
    store.load_weights(c)
    assert "differs from the cached record" in capsys.readouterr().out


def test_sweep_restore_weights_retrains_only_the_runs_whose_weights_are_missing(tiny, tmp_path, capsys):
    """``python -m repro sweep … --restore-weights`` (``P["restore_weights"]`` in ``run_all``): a store with
    records but some weights missing (a fresh clone) gets them back by retraining just those runs; without
    the flag nothing is retrained."""
    from repro.figures.common import run_all
    store = RunStore(tmp_path / "runs", tmp_path / "weights")
    jobs = [{"seed": s, "config": cfg(seed=s, rule={"name": "dfa"})} for s in (1, 2, 3)]
    P = {"device": "cpu", "workers": 1}
    run_all(jobs, store, P, desc="t")
    originals = {s: store.load_weights(j["config"])[0] for s, j in zip((1, 2, 3), jobs)}
    for j in jobs[:2]:
        (tmp_path / "weights" / f"{run_key(j['config'])}.pt").unlink()
    n = len(tiny)
    run_all(jobs, store, P, desc="t")
    assert len(tiny) == n and not (tmp_path / "weights" / f"{run_key(jobs[0]['config'])}.pt").exists()
    run_all(jobs, store, {**P, "restore_weights": True}, desc="t")
    assert len(tiny) == n + 2  # the two missing runs, not the third
    assert "t: 3 runs, weights missing for 2" in capsys.readouterr().out
    for s, j in zip((1, 2), jobs):
        for p, q in zip(store.load_weights(j["config"])[0].parameters(), originals[s].parameters()):
            assert torch.equal(p, q)


def test_on_epoch_sees_each_epochs_row_and_model_without_changing_the_run(tiny):
    """``train(on_epoch=…)``: one call per epoch with that epoch's history row and the model being trained,
    a diverging run's last row included; the record is the same as without the hook."""
    seen = []
    res = T.train(cfg(epochs=3), "cpu", on_epoch=lambda m, row: seen.append((m, dict(row))))
    assert [row for _, row in seen] == res.record["history"][1:] and all(m is res.model for m, _ in seen)
    assert metrics(T.train(cfg(epochs=3), "cpu").record) == metrics(res.record)
    rows = []
    bad = T.train(cfg({"name": "bp"}, optim={"name": "sgd", "lr": 1e30}, model={"width": 8, "loss": "mse"}, epochs=5),
                  "cpu", on_epoch=lambda m, row: rows.append(row))
    assert bad.record["status"] == "diverged" and rows == bad.record["history"][1:]


@pytest.mark.parametrize("env, expect", [(None, True), ("0", False)])
def test_keep_freed_memory_sets_glibc_malloc_once_and_honours_the_opt_out(env, expect):
    """train() and bench keep freed memory in glibc's heap (REPRO_KEEP_FREED_MEMORY=0: malloc as it was);
    off glibc the call is a no-op returning False."""
    import os
    import subprocess
    import sys
    if "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "").lower() \
            and env is None:
        pytest.skip("not glibc")
    code = ("from repro.train import keep_freed_memory as k, _MALLOC; a = k(); b = k(); "
            "print(a, b, _MALLOC['done'])")
    e = {k: v for k, v in os.environ.items() if k != "REPRO_KEEP_FREED_MEMORY"}
    if env is not None:
        e["REPRO_KEEP_FREED_MEMORY"] = env
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(expect), str(expect), "True"]


def test_bench_times_ftp_and_its_baselines_on_the_ftp_cnn():
    """bench's CNN section: each rule of FTP's table trains a step on the 1-conv net and is timed, with BP
    first (the ratios' base); its markdown table lists them; an unknown net is refused by name."""
    from repro import bench
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 784, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (300,), generator=g), 10).float()
    rows = bench.cnn_rows(x, y, torch.device("cpu"), steps=2)
    assert [r["rule"] for r in rows] == ["bp", "ftp", "pepita", "drtp"] and rows[0]["time_vs_bp"] == 1.0
    assert all(r["ms_per_step"] > 0 and r["peak_mb"] > 0 for r in rows)
    md = bench.markdown({"device": "cpu", "threads": 1, "torch": "t", "steps_timed": 2, "rows": [],
                         "full_epoch_s": {}, "cnn": rows, "keep_freed_memory": True})
    assert "FTP's CNN" in md and "| ftp |" in md and "malloc keeps freed memory" in md
    with pytest.raises(ValueError, match="bench net='mlp'"):
        bench.time_steps("bp", 8, 1, x, y, torch.device("cpu"), steps=1, net="mlp")
