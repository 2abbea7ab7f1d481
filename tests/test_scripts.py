"""The diagnostic scripts under scripts/ that claims or the README cite: they must keep running."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name, monkeypatch, mirror, tmp_path):
    """scripts/<name>.py as a module, on the test mirror's data."""
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(tmp_path / "data"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_weight_norm_probe_runs_and_prints_one_line_per_epoch(capsys, mirror, tmp_path, monkeypatch):
    """scripts/ftp_weight_norms.py (the diagnostic the output-step FTP 100-epoch claim cites) at smoke scale."""
    mod = _script("ftp_weight_norms", monkeypatch, mirror, tmp_path)
    mod.main(["--seed", "1", "--epochs", "2", "--device", "cpu", "--params", str(ROOT / "params.smoke.yaml")])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(len(r["weight_norms"]) == 3 for r in rows)
    assert all(len(r["weight_max"]) == 3 and 0 < max(r["weight_max"]) <= max(r["weight_norms"]) for r in rows)
    # the recorded paper-length run's own history: same config, seed and shuffling (its lr drop comes later)
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.train import train
    job = next(j for j in F.table_jobs(load_params("ftp_table", ROOT / "params.smoke.yaml"), "mnist")
               if j["part"] == "paper_length" and j["method"] == F.FTP_OS and j["seed"] == 1)
    assert job["config"]["epochs"] > 2 and job["config"]["optim"]["milestones"][0] >= 2
    hist = train(job["config"], "cpu").record["history"]
    assert [r["train_loss"] for r in rows] == [h["train_loss"] for h in hist[1:3]]
    with pytest.raises(SystemExit, match="--method 'FF'"):
        mod.main(["--method", "FF", "--params", str(ROOT / "params.smoke.yaml")])


def test_weight_norm_probe_retrains_a_quantised_run_with_its_own_history(capsys, mirror, tmp_path, monkeypatch):
    """``--bits``: the probe takes the run from the quantised sweep (same config, so the same history: the
    stochastic rounding is seeded by the run), and prints the share of zero update entries per layer."""
    mod = _script("ftp_weight_norms", monkeypatch, mirror, tmp_path)
    smoke = str(ROOT / "params.smoke.yaml")
    mod.main(["--method", "PEPITA", "--bits", "4", "--seed", "1", "--device", "cpu", "--params", smoke])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.train import train
    P = load_params("ftp_quantized", smoke)
    job = next(j for j in F.quantized_jobs(P, "mnist")
               if j["method"] == "PEPITA" and j["bits"] == 4 and j["seed"] == 1 and j["level"] == "full")
    hist = train(job["config"], "cpu").record["history"]
    assert [r["train_loss"] for r in rows] == [h["train_loss"] for h in hist[1:]] and len(rows) == P["epochs"]
    assert all(len(r["zero_update"]) == 3 and 0 <= min(r["zero_update"]) <= max(r["zero_update"]) <= 100 for r in rows)
    assert rows[0]["zero_update"][0] > 50  # at 4 bits most of PEPITA's first-layer update entries round to 0
    with pytest.raises(SystemExit, match="--method 'PEPITA' --bits 5: not in ftp_quantized"):
        mod.main(["--method", "PEPITA", "--bits", "5", "--params", smoke])
    with pytest.raises(SystemExit, match="--level 'nope'"):
        mod.main(["--method", "PEPITA", "--bits", "4", "--level", "nope", "--params", smoke])
    # --stable-gamma: the same reading's run at the section's stable γ (part stable_gamma), not the sweep's
    mod.main(["--method", F.FTP_OS, "--bits", "4", "--seed", "1", "--epochs", "1", "--stable-gamma", "--device", "cpu",
              "--params", smoke])
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    job = next(j for j in F.quantized_jobs(P, "mnist") if j["part"] == "stable_gamma" and j["method"] == F.FTP_OS
               and j["bits"] == 4 and j["seed"] == 1 and j["level"] == "full")
    assert job["config"]["rule"]["gamma"] == P["stable_gamma"] != P["gamma"]
    assert row["train_loss"] == train({**job["config"], "epochs": 1}, "cpu").record["history"][1]["train_loss"]
    with pytest.raises(SystemExit, match="--method 'BP' --bits 4: not in ftp_quantized \\(stable_gamma\\)"):
        mod.main(["--method", "BP", "--bits", "4", "--stable-gamma", "--params", smoke])


def test_weight_norm_probe_retrains_a_noise_run_at_stable_gamma(capsys, mirror, tmp_path, monkeypatch):
    """``--noise KIND=VALUE [--stable-gamma]``: the probe takes the run from the non-ideality sweep (the FTP
    readings at ``stable_gamma`` with the flag), same config, so the same history as the recorded run."""
    mod = _script("ftp_weight_norms", monkeypatch, mirror, tmp_path)
    smoke = str(ROOT / "params.smoke.yaml")
    mod.main(["--noise", "conductance_bits=4", "--stable-gamma", "--seed", "1", "--device", "cpu", "--params", smoke])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.train import train
    P = load_params("ftp_noise", smoke)
    job = next(j for j in F.noise_jobs(P, "mnist") if j["part"] == "stable_gamma" and j["method"] == F.FTP_OS
               and j["kind"] == "conductance_bits" and j["value"] == 4 and j["seed"] == 1)
    assert job["config"]["rule"]["gamma"] == P["stable_gamma"] != P["gamma"]
    hist = train(job["config"], "cpu").record["history"]
    assert [r["train_loss"] for r in rows] == [h["train_loss"] for h in hist[1:]] and len(rows) == P["epochs"]
    with pytest.raises(SystemExit, match="--method 'FTP \\(output step\\)' --noise 'conductance_bits=5': not in ftp_noise"):
        mod.main(["--noise", "conductance_bits=5", "--stable-gamma", "--params", smoke])
    with pytest.raises(SystemExit, match="--noise 'conductance_bits': expected KIND=VALUE"):
        mod.main(["--noise", "conductance_bits", "--params", smoke])
    with pytest.raises(SystemExit, match="--noise and --bits: give one"):
        mod.main(["--noise", "conductance_bits=4", "--bits", "4", "--params", smoke])


def test_f3_oscillation_probe_is_the_recorded_run_and_its_reads_are_the_masks(capsys, mirror, tmp_path, monkeypatch):
    """scripts/f3_oscillation.py (the README's F³-Error oscillation probes) at smoke scale: with no option it
    retrains Fig. 2's recorded F³-Error run (same history); --read true is F³-Error+OneHot's run; --read wrong
    feeds back exactly (1 − y*) ⊙ E; bad options are one clear line."""
    import torch
    from repro.figures import f3 as F
    from repro.figures.common import load_params
    from repro.rules.base import Batch
    from repro.train import train
    mod = _script("f3_oscillation", monkeypatch, mirror, tmp_path)
    smoke = str(ROOT / "params.smoke.yaml")
    P = load_params("f3_mnist", smoke)
    base = ["--seed", "1", "--device", "cpu", "--params", smoke]
    s = mod.main(base)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    job = next(j for j in F.mnist_jobs(P) if j["algorithm"] == "F3-Error" and j["seed"] == 1)
    hist = train(job["config"], "cpu").record["history"][1:]
    assert [r["train_loss"] for r in rows[:-1]] == [h["train_loss"] for h in hist] and len(hist) == P["epochs"]
    assert s["final_test_error"] == hist[-1]["test_error"] and rows[-1]["summary"] == s
    s_true = mod.main(base + ["--read", "true"])
    capsys.readouterr()
    v = next(j for j in F.variant_jobs({**load_params("f3_variants", smoke), "seeds": [1]})
             if j["variant"] == "delayed_error_one_hot")
    assert s_true["final_train_loss"] == train(v["config"], "cpu").record["history"][-1]["train_loss"]
    s_wrong = mod.main(base + ["--read", "wrong"])
    capsys.readouterr()
    assert s_wrong["final_train_loss"] not in (s["final_train_loss"], s_true["final_train_loss"])
    from repro.rules import RULES
    assert mod.PROBE_RULE not in RULES  # registered for the probe's own run only
    rule = mod.F3WrongClass()
    rule.E = torch.tensor([[0.5, -0.2, -0.7], [-0.1, 0.9, -0.3]])
    y = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    fb = rule.feedback(Batch(idx=torch.tensor([0, 1]), x=torch.zeros(2, 4), y=y), None)
    assert torch.equal(fb, torch.tensor([[0.0, -0.2, -0.7], [-0.1, 0.0, -0.3]]))
    cfg = mod.job_config(P, 1, "all", 1, None)
    assert cfg["optim"]["milestones"] == [1] and cfg["optim"]["gamma"] == 0.1
    for args, msg in ((["--read", "nope"], "--read 'nope'"), (["--lr-drop", "0"], "--lr-drop 0"),
                      (["--epochs", "0"], "--epochs 0")):
        with pytest.raises(SystemExit, match=msg):
            mod.main(base + args)


def test_float_master_flag_retrains_with_the_hardware_master_copy(monkeypatch, mirror, tmp_path, capsys):
    """``--float-master`` (the README's counterfactual for BP's 4-bit collapse) is ``hardware.master_copy``
    (tested in tests/test_quant.py) on the recorded run's config; a run without rounded weights is refused."""
    from repro import train as T
    mod = _script("ftp_weight_norms", monkeypatch, mirror, tmp_path)
    seen = []
    real = T.train
    monkeypatch.setattr(mod, "train", lambda cfg, *a, **kw: seen.append(cfg) or real(cfg, *a, **kw))
    smoke = str(ROOT / "params.smoke.yaml")
    mod.main(["--method", "BP", "--bits", "4", "--seed", "1", "--epochs", "1", "--device", "cpu", "--params", smoke,
              "--float-master"])
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert seen[0]["hardware"]["master_copy"] is True and seen[0]["hardware"]["bits"] == 4
    mod.main(["--method", "BP", "--noise", "write_noise=0.05", "--seed", "1", "--epochs", "1", "--device", "cpu",
              "--params", smoke, "--float-master"])  # float weights written with noise: the copy takes each error once
    assert seen[1]["hardware"] == {"write_noise": 0.05, "master_copy": True}
    for exact in (["--float-master"], ["--float-master", "--noise", "read_noise=0.05", "--method", "BP"]):
        with pytest.raises(SystemExit, match="--float-master: this run stores its weights exactly"):
            mod.main(exact + ["--params", smoke])


def test_cpu_speed_probe_compares_settings_and_histories_and_names_bad_input(capsys, mirror, tmp_path, monkeypatch):
    """scripts/cpu_speed.py (README, *Threads, not denormals*) on a smoke-scale record: the short probe times
    1 vs 2 threads, or flush-to-zero off vs on, and says whether the four histories agree; --full retrains the
    recorded run on its thread count and compares with the record; the caller's thread count and the flag are
    restored; a missing record or a bad count is one clear line."""
    import torch
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.train import train
    mod = _script("cpu_speed", monkeypatch, mirror, tmp_path)
    job = next(j for j in F.table_jobs(load_params("ftp_table", ROOT / "params.smoke.yaml"), "mnist")
               if j["method"] == "BP")
    with mod.torch_threads(1):
        rec = train(job["config"], "cpu").record
    path = tmp_path / f"{rec['key']}.json"
    path.write_text(json.dumps(rec))
    threads_before = torch.get_num_threads()
    short = mod.main([str(path), "--epochs", "1", "--n-train", "200"])
    assert short["compare"] == "threads" and set(short["seconds"]) == {"1", "2"}
    assert short["epochs"] == 1 and short["n_train"] == 200 and isinstance(short["histories_equal"], bool)
    flush = mod.main([str(path), "--epochs", "1", "--n-train", "200", "--compare", "flush"])
    assert set(flush["seconds"]) == {"off", "on"} and flush["histories_equal"] is True
    full = mod.main([str(path), "--full"])
    assert full["history_equals_record"] is True and full["threads"] == rec["env"]["threads"]
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [short, flush, full]
    assert torch.get_num_threads() == threads_before
    assert torch.set_flush_denormal(False)  # supported here, and left off
    with pytest.raises(SystemExit, match="record .*nope.json: no such file"):
        mod.main([str(tmp_path / "nope.json")])
    with pytest.raises(SystemExit, match="--epochs 0"):
        mod.main([str(path), "--epochs", "0"])
    with pytest.raises(SystemExit, match="--threads 0"):
        mod.main([str(path), "--threads", "0"])


def test_steptime_times_the_chosen_runs_and_names_a_bad_choice(capsys, mirror, tmp_path, monkeypatch):
    """scripts/steptime.py (the README's GPU plan uses it): one line per run picked by its columns."""
    mod = _script("steptime", monkeypatch, mirror, tmp_path)
    smoke = str(ROOT / "params.smoke.yaml")
    rows = mod.main(["f3_depth|algorithm=DFA,seed=1", "foton_alignment|method=PEPITA", "--params", smoke,
                     "--steps", "2", "--device", "cpu"])
    assert [r["run"] for r in rows] == ["f3_depth|algorithm=DFA,seed=1", "foton_alignment|method=PEPITA"]
    assert all(r["ms_per_step"] > 0 and r["steps_per_epoch"] >= 1 and r["minutes_per_run"] > 0 for r in rows)
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(SystemExit, match=r"no run of f3_depth has \{'algorithm': 'XX'\}"):
        mod.main(["f3_depth|algorithm=XX", "--params", smoke])
    with pytest.raises(SystemExit, match="--steps=0"):
        mod.main(["f3_depth|algorithm=DFA", "--params", smoke, "--steps", "0"])


def test_gpu_batch_runs_sweeps_side_by_side_and_packs_their_new_records(mirror, tmp_path):
    """scripts/gpu_batch.sh (the README's prepared GPU call) on this CPU: two sweeps side by side under a time
    limit; the new run records come back in $OUT/runs.tgz, the logs in logs.tgz, (no) checkpoints in ckpt.tgz."""
    import os
    import subprocess
    import sys
    import tarfile
    (tmp_path / "repro").symlink_to(ROOT / "repro")
    (tmp_path / "params.smoke.yaml").write_text((ROOT / "params.smoke.yaml").read_text())
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PY": sys.executable, "REPRO_DATA_MIRROR": str(mirror),
           "REPRO_DATA_ROOT": str(tmp_path / "data"), "REPRO_DEVICE": "cpu"}
    sel = "--only dataset=wine_quality --only seed=1"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_batch.sh"), "params.smoke.yaml", "300",
                        f"1 f3_regression {sel} --only 'algorithm=BP,DFA'", f"1 f3_regression {sel} --only algorithm=DRTP"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3 new run records" in r.stdout
    with tarfile.open(out / "runs.tgz") as t:
        names = t.getnames()
    assert len(names) == 3 and all(n.startswith("results/f3_regression/runs/") and n.endswith(".json") for n in names)
    assert (out / "logs.tgz").is_file() and (out / "ckpt.tgz").is_file()
