"""The README shows exactly the claims table the committed metrics produce, and the README's two
commands are the ones CI and users run."""
from pathlib import Path

from repro import claims

ROOT = Path(__file__).resolve().parents[1]


def block(text: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert start in text and end in text, f"README lacks the {name} markers"
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_readme_claims_table_matches_committed_metrics():
    readme = (ROOT / "README.md").read_text()
    rows = claims.table(ROOT / "claims.yaml", ROOT)
    assert block(readme, "claims") == claims.markdown(rows), "run `make readme`"


def test_claims_table_rows_have_seven_cells_even_with_pipes_in_the_text():
    import re
    rows = claims.table(ROOT / "claims.yaml", ROOT)
    rows.append({**rows[0], "what": "max |Δ| of medians"})
    for line in claims.markdown(rows).splitlines():
        assert len(re.split(r"(?<!\\)\|", line)) == 9, line  # 7 cells between 8 unescaped pipes


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ", 1)[0] and "make figures" in readme.split("\n## ", 1)[0]
    assert "\nmake test\n" in ci


def test_every_claim_is_well_formed():
    import yaml
    cs = yaml.safe_load((ROOT / "claims.yaml").read_text())["claims"]
    ids = [c["id"] for c in cs]
    assert len(ids) == len(set(ids))
    for c in cs:
        assert c["kind"] in ("abs", "rel", "factor", "max", "min", "exact", "bool", "info"), c["id"]
        assert {"paper", "what", "file", "key"} <= set(c), c["id"]
        if c["kind"] in ("abs", "rel", "factor", "max", "min"):
            assert isinstance(c["tolerance"], (int, float)), c["id"]


def test_check_verdicts(tmp_path):
    """pass / MISS / expected miss / stale expected miss / not run, and the exit code."""
    import json
    (tmp_path / "m.json").write_text(json.dumps({"a": {"mean": 2.8, "std": 0.1, "n": 3}, "b": 5.0, "q": False}))
    cl = [
        {"id": "pass", "paper": "x", "what": "w", "reported": 2.7, "kind": "abs", "tolerance": 0.4, "file": "m.json", "key": "a.mean"},
        {"id": "miss", "paper": "x", "what": "w", "reported": 2.0, "kind": "abs", "tolerance": 0.4, "file": "m.json", "key": "a.mean"},
        {"id": "known", "paper": "x", "what": "w", "reported": 1.0, "kind": "max", "tolerance": 4, "file": "m.json", "key": "b", "expected_miss": "why"},
        {"id": "stale", "paper": "x", "what": "w", "reported": 5.0, "kind": "factor", "tolerance": 1.5, "file": "m.json", "key": "b", "expected_miss": "why"},
        {"id": "bool", "paper": "x", "what": "w", "kind": "bool", "expect": True, "file": "m.json", "key": "q"},
        {"id": "none", "paper": "x", "what": "w", "reported": 1, "kind": "min", "tolerance": 0, "file": "nope.json", "key": "a"},
    ]
    import yaml
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"claims": cl}))
    st = {r["id"]: r["status"] for r in claims.table(tmp_path / "c.yaml", tmp_path)}
    assert st == {"pass": "pass", "miss": "MISS", "known": "expected miss", "stale": "stale expected_miss",
                  "bool": "MISS", "none": "not run"}
    assert claims.main(str(tmp_path / "c.yaml"), root=str(tmp_path)) == 1
