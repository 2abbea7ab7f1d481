"""Claims table: each number a paper prints, the tolerance its issue gives, and the value our committed
metrics reproduce. ``python -m repro check`` prints reported / reproduced / Δ / status for every claim
and exits 1 on a miss (a claim listed with ``expected_miss`` — a reviewed, explained miss — does not
fail the check, but one that starts passing does, so the note is removed).

Claim kinds (``tolerance``): ``abs`` |v − r| ≤ t; ``rel`` |v − r| ≤ t·r; ``factor`` r/t ≤ v ≤ r·t;
``max`` v ≤ t; ``min`` v ≥ t; ``exact`` v equals r (as printed: rounded to t decimals if t is given);
``bool`` v is ``expect``; ``info`` reported with its spread, no verdict.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml


def _lookup(metrics: dict, key: str):
    cur = metrics
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def evaluate(claim: dict, root: Path) -> dict:
    f = root / claim["file"]
    out = {"status": "not run", "value": None, "spread": "", "delta": None}
    if not f.is_file():
        return out
    m = json.loads(f.read_text())
    v = _lookup(m, claim["key"])
    if v is None:
        return out
    if claim["key"].endswith(".mean"):
        parent = _lookup(m, claim["key"][: -len(".mean")])
        if parent.get("n", 0) > 1:
            out["spread"] = f"± {parent['std']:.3g} (n={parent['n']})"
        elif "n" in parent:
            out["spread"] = f"(n={parent['n']})"
    out["value"] = v
    kind, r, t = claim["kind"], claim.get("reported"), claim.get("tolerance")
    if kind == "bool":
        ok = bool(v) is bool(claim.get("expect", True))
    elif kind == "info":
        out["status"] = "info"
        if r is not None:
            out["delta"] = v - r
        return out
    else:
        if kind == "abs":
            ok = abs(v - r) <= t
        elif kind == "rel":
            ok = abs(v - r) <= t * abs(r)
        elif kind == "factor":
            ok = r / t <= v <= r * t
        elif kind == "max":
            ok = v <= t
        elif kind == "min":
            ok = v >= t
        elif kind == "exact":  # equal as printed: to ``tolerance`` decimals, or exactly when absent
            ok = (round(v, t) == r) if t is not None else (v == r)
        else:
            raise ValueError(f"claim {claim['id']}: kind={kind!r} is not one of abs, rel, factor, max, min, bool, info")
        if r is not None:
            out["delta"] = v - r
    if ok:
        out["status"] = "stale expected_miss" if claim.get("expected_miss") else "pass"
    else:
        out["status"] = "expected miss" if claim.get("expected_miss") else "MISS"
    return out


def tolerance_text(c: dict) -> str:
    k, t = c["kind"], c.get("tolerance")
    if k == "rel":
        return f"± {t * 100:g} %"
    if k == "bool":
        return f"is {c.get('expect', True)}"
    if k == "info":
        return "reported with spread"
    if k == "exact":
        return "exact" if t is None else f"exact to {t} decimals"
    return {"abs": "± {}", "factor": "within ×{}", "max": "≤ {}", "min": "≥ {}"}[k].format(t)


def fmt(v, claim: dict | None = None) -> str:
    """4 significant digits; exact claims as compared (integers in full, or to their decimals)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if claim is not None and claim.get("kind") == "exact":
        t = claim.get("tolerance")
        return f"{int(v):,}" if t is None and float(v).is_integer() else f"{v:.{t if t is not None else 6}f}"
    return f"{v:.4g}"


def table(claims_file: str | Path = "claims.yaml", root: str | Path = ".") -> list[dict]:
    root = Path(root)
    claims = yaml.safe_load(Path(claims_file).read_text())["claims"]
    rows = []
    for c in claims:
        e = evaluate(c, root)
        rows.append({**c, **e, "tol": tolerance_text(c)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| claim | paper | reported | reproduced | Δ | tolerance | status |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        rep = fmt(r.get("reported"), r) if r["kind"] != "bool" else r.get("text_reported", "yes")
        cells = [r["what"], r["paper"], f"{rep}{' (derived)' if r.get('derived') else ''}",
                 f"{fmt(r['value'], r)} {r['spread']}", fmt(r["delta"], r), r["tol"], r["status"]]
        # a "|" inside a cell (e.g. "max |Δ|") would split it: escape it
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main(claims_file: str = "claims.yaml", as_markdown: bool = False, root: str = ".") -> int:
    rows = table(claims_file, root)
    if as_markdown:
        print(markdown(rows))
    else:
        w = max(len(r["id"]) for r in rows)
        print(f"{'claim':<{w}}  {'reported':>10}  {'reproduced':>24}  {'Δ':>9}  {'tolerance':<22} status")
        for r in rows:
            rep = fmt(r.get("reported"), r) if r["kind"] != "bool" else "yes"
            print(f"{r['id']:<{w}}  {rep:>10}  {(fmt(r['value'], r) + ' ' + r['spread']).strip():>24}  "
                  f"{fmt(r['delta'], r):>9}  {r['tol']:<22} {r['status']}")
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print("summary: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    bad = [r["id"] for r in rows if r["status"] in ("MISS", "stale expected_miss")]
    if bad:
        print("failing: " + ", ".join(bad))
    return 1 if bad else 0


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"README has no {start} … {end} block")
    head, rest = text.split(start, 1)
    return head + start + "\n" + body.strip() + "\n" + end + rest.split(end, 1)[1]


def update_readme(readme: str | Path = "README.md", claims_file: str | Path = "claims.yaml",
                  bench_json: str | Path = "results/bench.json") -> None:
    """Rewrite the README's claims table (and benchmark table, if measured) from committed results."""
    p = Path(readme)
    text = replace_block(p.read_text(), "claims", markdown(table(claims_file, p.parent)))
    b = Path(bench_json)
    if b.is_file():
        from .bench import markdown as bench_md
        text = replace_block(text, "bench", bench_md(json.loads(b.read_text())))
    p.write_text(text)
