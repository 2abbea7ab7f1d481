"""Command line: ``python -m repro {fetch,sweep,check,macs,readme,spec,bench}``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download/copy datasets into data/ (mirror first, checksums verified)")
    f.add_argument("names", nargs="*", help="datasets (default: every dataset available offline here)")
    f.add_argument("--all", action="store_true", help="every registered dataset")
    s = sub.add_parser("sweep", help="train every run of a params.yaml section (cached runs are skipped)")
    s.add_argument("section")
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--results", default="results")
    s.add_argument("--only", action="append", default=[], metavar="COLUMN=VALUE",
                   help="train only the jobs whose column (dataset, algorithm, method, seed, …) has this value or one of "
                        "these (COLUMN=A,B); repeat for more columns")
    s.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per run (default: params' `threads`, REPRO_THREADS, else 1 — the digits of a "
                        "CPU run depend on it; a record names its count)")
    s.add_argument("--restore-weights", action="store_true",
                   help="also retrain finished runs whose weights are missing here (a fresh clone has records only)")
    c = sub.add_parser("check", help="claims table: reported vs reproduced; exit 1 on an unexpected miss")
    c.add_argument("--claims", default="claims.yaml")
    c.add_argument("--markdown", action="store_true", help="print the README table")
    mc = sub.add_parser("macs", help="FTP paper's analytic MAC counts per training sample (JSON)")
    mc.add_argument("--out", default=None)
    sub.add_parser("readme", help="rewrite README.md's claims and benchmark tables from committed results")
    sp = sub.add_parser("spec", help="dvc exp run with params.spec.yaml: every figure at the papers' full scale (a GPU's)")
    sp.add_argument("--print", action="store_true", dest="print_only",
                    help="show the runs per section at each scale and the command; run nothing")
    sp.add_argument("--params", default="params.yaml")
    sp.add_argument("--spec", default="params.spec.yaml")
    sp.add_argument("--write", metavar="FILE", default=None,
                    help="write the spec-scale params to FILE (for `sweep --params FILE`) instead of running dvc")
    sp.add_argument("--land", metavar="DIR", default=None,
                    help="copy the finished spec-scale runs of `sweep --results DIR` into results/spec_scale (keys "
                         "checked; with --print: only list them)")
    b = sub.add_parser("bench", help="time one training epoch and peak memory per rule vs BP")
    b.add_argument("--quick", action="store_true", help="fewer steps (CI)")
    b.add_argument("--out", default=None, help="write the table as JSON here")
    a, rest = ap.parse_known_args(argv)
    if rest and a.cmd != "spec":
        ap.error(f"unrecognized arguments: {' '.join(rest)}")

    from .data import DataError
    from .models import ConfigError

    try:
        if a.cmd == "fetch":
            from . import data
            names = a.names or [n for n, e in data.REGISTRY.items() if e.files and (e.offline_here or a.all)]
            for n in names:
                print(f"{n}: {data.fetch(n)}")
        elif a.cmd == "sweep":
            from .figures.common import load_params
            from .figures import SECTIONS, parse_only
            P = {**load_params(a.section, a.params), "restore_weights": a.restore_weights}
            if a.threads is not None:
                P["threads"] = a.threads
            SECTIONS[a.section](a.section, P, a.results, only=parse_only(a.only))
        elif a.cmd == "check":
            from .claims import main as check_main
            return check_main(a.claims, as_markdown=a.markdown)
        elif a.cmd == "macs":
            import json
            from pathlib import Path
            from .macs import all_counts
            txt = json.dumps(all_counts(), indent=1, sort_keys=True) + "\n"
            if a.out:
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                Path(a.out).write_text(txt)
            print(txt, end="")
        elif a.cmd == "readme":
            from .claims import update_readme
            update_readme()
        elif a.cmd == "spec":  # arguments it does not know go to dvc exp run (e.g. --queue, --temp)
            from .spec import main as spec_main
            return spec_main(a.params, a.spec, a.print_only, rest, a.write, a.land)
        elif a.cmd == "bench":
            from .bench import main as bench_main
            return bench_main(quick=a.quick, out=a.out)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
