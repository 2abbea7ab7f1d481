"""The diagnostic scripts under scripts/ that claims or the README cite: they must keep running."""
import pytest


def test_weight_norm_probe_runs_and_prints_one_line_per_epoch(capsys, mirror, tmp_path, monkeypatch):
    """scripts/ftp_weight_norms.py (the diagnostic the output-step FTP 100-epoch claim cites) at smoke scale."""
    import importlib.util
    import json
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(tmp_path / "data"))
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("ftp_weight_norms", root / "scripts" / "ftp_weight_norms.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--seed", "1", "--epochs", "2", "--device", "cpu", "--params", str(root / "params.smoke.yaml")])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(len(r["weight_norms"]) == 3 for r in rows)
    # the recorded paper-length run's own history: same config, seed and shuffling (its lr drop comes later)
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.train import train
    job = next(j for j in F.table_jobs(load_params("ftp_table", root / "params.smoke.yaml"), "mnist")
               if j["part"] == "paper_length" and j["method"] == F.FTP_OS and j["seed"] == 1)
    assert job["config"]["epochs"] > 2 and job["config"]["optim"]["milestones"][0] >= 2
    hist = train(job["config"], "cpu").record["history"]
    assert [r["train_loss"] for r in rows] == [h["train_loss"] for h in hist[1:3]]
    with pytest.raises(SystemExit, match="--method 'FF'"):
        mod.main(["--method", "FF", "--params", str(root / "params.smoke.yaml")])
