"""FTP (arXiv 2506.11030) — a RECONSTRUCTION: main accuracy table (FTP vs BP vs PEPITA vs DRTP on the
FC net 784/3072-1024-128-C of the authors' MAC sheet) and the γ sensitivity sweep (ftp.md §4.2–4.3, §5).
Training settings are PEPITA's public defaults, which the spec recommends because the nets coincide:
SGD + momentum 0.9, lr 0.01, batch 64, ×0.1 at epochs 60 and 90, He-uniform init, inputs in [0, 1]."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..models import ConfigError
from ..quant import SIGNAL_KINDS
from ..rules import Batch
from ..train import (build, load_data, make_optimizer, normalize_config, resolve_device, torch_threads,
                     train_step)
from .common import (agg, budget, check_known, final_frame, fixed_jitter, history_frame, mark_diverged, measured,
                     run_all, run_for_dataset, seed_filter, store_for)


def _cfg(P: dict, dataset: str, rule: dict, bias: bool, seed: int) -> dict:
    return {"dataset": {"name": dataset, "normalize": "unit", "n_train": P.get("n_train"), "n_test": P.get("n_test")},
            "model": {"arch": "mlp", "widths": P["widths"], "act": P["act"], "loss": "ce", "bias": bias,
                      "init": "he_uniform"},
            "rule": rule,
            "optim": {"name": "sgd", "lr": P["lr"], "momentum": 0.9, "milestones": P["milestones"], "gamma": 0.1},
            "epochs": P["epochs"], "batch_size": P["batch_size"], "seed": seed}


# The two readings of FTP's first-layer target (ftp.md §6 item 1): the spec's recommended one (``scale``:
# τ_1 = h_1 + γ(ψ(yG) − ψ(ŷG)); the claims' reading) and its listed alternative (``output_step``:
# τ_1 = h_1 + ψ((ŷ + γ(y − ŷ))G) − ψ(ŷG)). They coincide for ψ = identity; with ψ = ReLU they do not.
FTP_OS = "FTP (output step)"
READINGS = (("FTP", "ftp"), (FTP_OS, "ftp_os"))  # method label, metrics-key prefix


def _fc_rules(P: dict) -> dict[str, tuple[dict, bool]]:
    """Each FC method's rule config and whether its net has biases (PEPITA's nets have none)."""
    return {"BP": ({"name": "bp"}, True), "DRTP": ({"name": "drtp"}, True),
            "PEPITA": ({"name": "pepita", "keep": P["keep"]}, False),
            "FTP": ({"name": "ftp", "gamma": P["gamma"], "keep": P["keep"]}, True),
            FTP_OS: ({"name": "ftp", "gamma": P["gamma"], "keep": P["keep"], "gamma_mode": "output_step"}, True)}




def _fc_job(P: dict, dataset: str, m: str, seed: int, hardware: dict | None = None, **meta) -> dict:
    """One FC run of method ``m`` (PEPITA's training), optionally on a hardware model."""
    rule, bias = _fc_rules(P)[m]
    cfg = _cfg(P, dataset, rule, bias, seed)
    if hardware:
        cfg["hardware"] = hardware
    return {"dataset": dataset, "method": m, **meta, "seed": seed, "config": cfg}


# The CNN rows' rules (the conv nets train without dropout; PEPITA's conv update on the map before pooling)
CNN_RULES = {"BP": {"name": "bp"}, "FTP": {"name": "ftp"}, "PEPITA": {"name": "pepita", "keep": 1.0},
             "DRTP": {"name": "drtp"}}


def _cnn_job(P: dict, dataset: str, m: str, seed: int, part: str) -> dict:
    """One run of method ``m`` on the 1-conv CNN of the MAC sheet (``P["cnn"]``; ftp.md §4.2), no biases."""
    C = P["cnn"]
    rule = {**CNN_RULES[m], "gamma": P["gamma"]} if m == "FTP" else dict(CNN_RULES[m])
    cnn = {"channels": list(C["channels"]), "kernel": C["kernel"], "padding": 0, "bn": False, "bias": False}
    cfg = _cfg(P, dataset, rule, False, seed)
    cfg["model"] = {"arch": "cnn", "act": P["act"], "loss": "ce", "init": "he_uniform", "cnn": cnn}
    cfg["batch_size"] = C["batch_size"]
    return {"dataset": dataset, "method": f"{m} CNN", "gamma": P["gamma"] if m == "FTP" else None,
            "part": part, "seed": seed, "config": cfg}


def table_jobs(P: dict, dataset: str) -> list[dict]:
    """The table's runs (``part`` ``table``): FC rows, CNN rows, and the γ sweep on ``gamma_sweep_dataset``.
    ``paper_length`` (optional; ``{methods, epochs, milestones, seeds, datasets, gammas, cnn_methods,
    cnn_seeds}``) adds FC rows at other epochs and lr milestones (``part`` ``paper_length``; ``gammas``: the FTP
    readings among ``methods`` again at each other γ; ``cnn_methods``: CNN rows too, on ``cnn_seeds``, default
    ``seeds``): the spec's 100 epochs for a few methods where the
    whole table cannot run that long (README). Same nets and training otherwise, so a later full-length
    table reuses these runs from the run store."""
    jobs = []
    for seed in P["seeds"]:
        jobs += [_fc_job(P, dataset, m, seed, gamma=P["gamma"] if m.startswith("FTP") else None, part="table")
                 for m in P["methods"]]
        C = P.get("cnn") or {}
        cnn_seeds = C.get("seeds", P["seeds"])  # the CNN rows may run fewer seeds (cost; README)
        jobs += [_cnn_job(P, dataset, m, seed, "table") for m in (C.get("methods", []) if seed in cnn_seeds else [])]
        if dataset == P["gamma_sweep_dataset"]:
            for g in P["gammas"]:
                if g != P["gamma"]:
                    rule = {"name": "ftp", "gamma": g, "keep": P["keep"]}
                    jobs.append({"dataset": dataset, "method": "FTP", "gamma": g, "part": "table", "seed": seed,
                                 "config": _cfg(P, dataset, rule, True, seed)})
    L = P.get("paper_length") or {}
    if L and dataset in L.get("datasets", [dataset]):
        check_known("ftp_table.paper_length.methods", L["methods"], _fc_rules(P))
        check_known("ftp_table.paper_length.cnn_methods", L.get("cnn_methods", []), CNN_RULES)
        Q = {**P, "epochs": L["epochs"], "milestones": L["milestones"]}
        jobs += [_fc_job(Q, dataset, m, seed, gamma=P["gamma"] if m.startswith("FTP") else None, part="paper_length")
                 for seed in L["seeds"] for m in L["methods"]]
        jobs += [_cnn_job(Q, dataset, m, seed, "paper_length")  # the CNN rows at this length (the table's net)
                 for seed in L.get("cnn_seeds", L["seeds"]) for m in L.get("cnn_methods", [])]
        for g in L.get("gammas", []):  # both FTP readings at other γ, same length (the γ sweep at paper length)
            if g != P["gamma"]:
                jobs += [_fc_job({**Q, "gamma": g}, dataset, m, seed, gamma=g, part="paper_length")
                         for seed in L["seeds"] for m in L["methods"] if m.startswith("FTP")]
        n_val = L.get("val_gamma", 0)
        if n_val:  # the same γ sweep with the last n_val training samples held out: γ chosen on validation
            for g in sorted({P["gamma"], *L.get("gammas", [])}):
                for seed in L["seeds"]:
                    for m in (m for m in L["methods"] if m.startswith("FTP")):
                        job = _fc_job({**Q, "gamma": g}, dataset, m, seed, gamma=g, part="val_gamma")
                        job["config"]["dataset"]["n_val"] = n_val
                        jobs.append(job)
    return jobs


def _run(jobs: list[dict], dataset: str, section: str, P: dict, results: str):
    """Train what is not cached; accuracies (%) beside the errors."""
    hist, fin, reason = run_for_dataset(jobs, dataset, section, P, results)
    if reason is None:
        fin["final_test_acc"] = 100.0 - fin["final_test_error"]
        fin["best_test_acc"] = 100.0 - fin["best_test_error"]
        if "final_val_error" in fin:  # runs with a held-out validation split (dataset.n_val)
            fin["final_val_acc"] = 100.0 - fin["final_val_error"]
    return hist, fin, reason


def run(P: dict, dataset: str, results: str = "results"):
    return _run(table_jobs(P, dataset), dataset, "ftp_table", P, results)


def part_of(df: pd.DataFrame, part: str = "sweep", unlabelled: str = "sweep") -> pd.DataFrame:
    """The rows of one part of a figure's jobs (quantisation: ``sweep`` or ``signal_ablation``; table:
    ``table`` or ``paper_length``); a frame without a ``part`` column is all ``unlabelled``."""
    return df[df.part == part] if "part" in df else (df if part == unlabelled else df.iloc[:0])


def _table_parts(fin: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table's runs and the paper-length runs (records from before parts existed are the table's)."""
    return part_of(fin, "table", unlabelled="table"), part_of(fin, "paper_length", unlabelled="table")


def _at_table_gamma(rows: pd.DataFrame, P: dict) -> pd.DataFrame:
    """The rows at the table's γ, methods without a γ included; the other γ are the sweeps'."""
    return rows[rows.gamma.isna() | (rows.gamma == P["gamma"])] if "gamma" in rows else rows


def _accuracy(rows: pd.DataFrame) -> dict:
    """Final (``agg``) and best-epoch accuracy per method, and the claims' checks: each FTP reading within 2
    points of BP (final test accuracy, 32 bits)."""
    out: dict = {"final_test_acc": {m: agg(g.final_test_acc) for m, g in rows.groupby("method")},
                 "best_test_acc": {m: float(g.best_test_acc.mean()) for m, g in rows.groupby("method")}}
    a = out["final_test_acc"]
    for label, key in READINGS:
        if label in a and "BP" in a:
            out[f"{key}_fp32_within_2_of_bp"] = bool(a["BP"]["mean"] - a[label]["mean"] <= 2.0)
    if "FTP CNN" in a and "BP CNN" in a:
        out["ftp_cnn_gap_to_bp_cnn"] = a["BP CNN"]["mean"] - a["FTP CNN"]["mean"]
    return out


def _diverged(rows: pd.DataFrame) -> dict:
    return {m: int((g.status == "diverged").sum()) for m, g in rows.groupby("method")}


def metrics(fin: pd.DataFrame, P: dict) -> dict:
    """Mean final/best accuracy per method (diverged runs at their measured, chance-level accuracy), the γ
    sweep, and the claims' checks: each FTP reading within 2 points of BP at 32 bits. ``paper_length``: the
    same for the rows trained at the spec's length (``table_jobs``), with its epochs."""
    table, long = _table_parts(fin)
    ok = measured(table)
    main = _at_table_gamma(ok, P)
    out = {**_accuracy(main),
           "gamma_sweep": {str(k): float(g.final_test_acc.mean()) for k, g in ok[ok.method == "FTP"].groupby("gamma")},
           "diverged": _diverged(_at_table_gamma(table, P))}  # the γ sweep's runs: gamma_sweep (as paper_length)
    if len(long):
        at_gamma = _at_table_gamma(long, P)
        out["paper_length"] = {**_accuracy(measured(at_gamma)), "epochs": P["paper_length"]["epochs"],
                               "diverged": _diverged(at_gamma), **_gamma_sweep(long, P)}
        val = part_of(fin, "val_gamma", unlabelled="table")
        if len(val):
            out["paper_length"].update(_val_gamma(val, long, P))
    return out


def _val_gamma(val: pd.DataFrame, long: pd.DataFrame, P: dict) -> dict:
    """γ chosen on a validation split (``paper_length.val_gamma``: the last n training samples held out): per
    FTP reading, the mean final validation accuracy per γ (runs trained on the rest), the γ with the highest,
    and the test accuracy at that γ of the paper-length runs trained on the whole training set (the usual
    refit; the held-out runs' own test accuracy beside it) — the claims' check against BP without choosing
    γ on the test set. Diverged runs count at their measured (chance) accuracy."""
    bp = measured(long[long.method == "BP"]).final_test_acc
    out: dict = {"val_gamma": {}}
    for label, key in READINGS:
        rows = measured(val[val.method == label])
        if not len(rows):
            continue
        by_gamma = dict(list(rows.groupby("gamma")))
        g = max(by_gamma, key=lambda k: by_gamma[k].final_val_acc.mean())
        refit = measured(long[(long.method == label) & (long.gamma == g)])
        r = {"n_val": int(P["paper_length"]["val_gamma"]), "gamma": float(g),
             "val_acc": {str(k): float(v.final_val_acc.mean()) for k, v in by_gamma.items()},
             "diverged": {str(k): _diverged(v)[label] for k, v in by_gamma.items()},
             "held_out_test_acc": agg(by_gamma[g].final_test_acc)}
        if len(refit):
            r["final_test_acc"] = agg(refit.final_test_acc)
            if len(bp):
                r["within_2_of_bp"] = bool(bp.mean() - refit.final_test_acc.mean() <= 2.0)
                out[f"{key}_val_gamma_within_2_of_bp"] = r["within_2_of_bp"]
        out["val_gamma"][key] = r
    return out


def _readings_over_gamma(rows: pd.DataFrame) -> pd.DataFrame:
    """The FTP readings' rows if they ran at two γ or more (a γ sweep), else none."""
    ftp = rows[rows.method.isin([label for label, _ in READINGS])]
    return ftp if "gamma" in ftp and ftp.gamma.nunique() > 1 else ftp.iloc[:0]


def _gamma_sweep(long: pd.DataFrame, P: dict) -> dict:
    """The FTP readings' γ sweep at paper length (``paper_length.gammas`` beside the table's γ): mean final
    accuracy and diverged runs per reading and γ, and each reading's best γ — chosen on the test set, as the
    table's γ sweep is (say so where it is quoted) — with its check against the paper-length BP rows."""
    ftp = _readings_over_gamma(measured(long))
    if not len(ftp):
        return {}
    bp = measured(long[long.method == "BP"]).final_test_acc
    out: dict = {"gamma_sweep": {}, "gamma_sweep_diverged": {}, "gamma_best": {}}
    for label, key in READINGS:
        by_gamma = dict(list(ftp[ftp.method == label].groupby("gamma")))
        if not by_gamma:
            continue
        out["gamma_sweep"][label] = {str(g): float(r.final_test_acc.mean()) for g, r in by_gamma.items()}
        out["gamma_sweep_diverged"][label] = {str(g): _diverged(r)[label] for g, r in by_gamma.items()}
        g, rows = max(by_gamma.items(), key=lambda kv: kv[1].final_test_acc.mean())
        best = {"gamma": float(g), "final_test_acc": agg(rows.final_test_acc), "seeds": int(len(rows)),
                "diverged": _diverged(rows)[label]}
        if len(bp):
            best["within_2_of_bp"] = bool(bp.mean() - rows.final_test_acc.mean() <= 2.0)
        out["gamma_best"][key] = best
    return out


def _mark_diverged_by_method(ax, rows: pd.DataFrame, order: list[str]) -> bool:
    """Diverged runs as red × at their measured accuracy on a categorical method axis (positions by
    ``order``); whether there were any."""
    bad = rows[rows.status == "diverged"]
    if len(bad):
        ax.scatter([order.index(m) for m in bad.method], bad.final_test_acc, marker="x", s=70, c="red", zorder=6,
                   label="diverged (at its measured accuracy)")
    return bool(len(bad))


def _gamma_axis(ax, gammas: pd.Series) -> None:
    """A log γ axis ticked at the γ values that ran, written plainly."""
    ticks = sorted(set(gammas))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("γ")


def plot_table(fin: pd.DataFrame, P: dict, dataset: str):
    ok, long_all = map(measured, _table_parts(fin))
    L = P.get("paper_length") or {}
    main, long = _at_table_gamma(ok, P), _at_table_gamma(long_all, P)
    sweep = _readings_over_gamma(long_all)
    if len(sweep):  # 2 × 2: the 10-epoch table and γ sweep above, their paper-length counterparts below
        fig, axes = plt.subplots(2, 2, figsize=(14, 8), gridspec_kw={"width_ratios": [1.6, 1]})
        axes = axes.ravel()
    else:
        fig, axes = plt.subplots(1, 3 if len(long) else 2, figsize=(16 if len(long) else 11, 4),
                                 gridspec_kw={"width_ratios": [2, 1.3, 1.3] if len(long) else [1, 1]})
    order = [m for m in P["methods"] + [f"{m} CNN" for m in (P.get("cnn") or {}).get("methods", [])]
             if m in set(main.method)]
    sns.pointplot(main, x="method", y="final_test_acc", order=order, errorbar="sd", linestyle="none", capsize=0.2,
                  ax=axes[0])
    with fixed_jitter():
        sns.stripplot(main, x="method", y="final_test_acc", order=order, color="0.4", size=4, ax=axes[0])
    if _mark_diverged_by_method(axes[0], main, order):
        axes[0].legend(fontsize=7)
    axes[0].tick_params(axis="x", labelrotation=30, labelsize=8)
    axes[0].set_title(f"{dataset}: FC {'-'.join(map(str, P['widths']))} (and CNN), final test accuracy", fontsize=9)
    axes[0].set_ylabel("test accuracy (%)")
    g = ok[ok.method == "FTP"]
    if g.gamma.nunique() > 1:
        # band = min–max over seeds: a γ where one seed stalls is bimodal, and a ± sd band would pass 100 %
        sns.lineplot(g, x="gamma", y="final_test_acc", marker="o", errorbar=("pi", 100), ax=axes[1])
        mark_diverged(axes[1], g, "gamma")
        _gamma_axis(axes[1], g.gamma)
        axes[1].set_title("FTP γ sensitivity (the spec's τ₁ reading; band: min–max over seeds)", fontsize=9)
        axes[1].set_ylabel("test accuracy (%)")
    else:
        axes[1].set_axis_off()
    if len(long):  # the rows trained at the spec's length, beside the same methods' table means (hollow)
        lorder = [m for m in L["methods"] + [f"{m} CNN" for m in L.get("cnn_methods", [])] if m in set(long.method)]
        sns.pointplot(long, x="method", y="final_test_acc", order=lorder, errorbar="sd", linestyle="none",
                      capsize=0.2, ax=axes[2], label=f"{L['epochs']} epochs (mean ± sd)")
        with fixed_jitter():
            sns.stripplot(long, x="method", y="final_test_acc", order=lorder, color="0.4", size=4, ax=axes[2])
        short = main.groupby("method").final_test_acc.mean()
        xs = [i for i, m in enumerate(lorder) if m in short]
        axes[2].scatter(xs, [short[lorder[i]] for i in xs], marker="o", s=60, facecolors="none",
                        edgecolors="C1", zorder=5, label=f"{P['epochs']} epochs (table, mean)")
        _mark_diverged_by_method(axes[2], long, lorder)
        axes[2].legend(fontsize=7)
        axes[2].tick_params(axis="x", labelrotation=30, labelsize=8)
        n = len(L["seeds"])
        seeds = f"{n} seed{'s' * (n != 1)}"
        if any(m.endswith(" CNN") for m in lorder) and len(L.get("cnn_seeds", L["seeds"])) != n:
            seeds += f" (CNN rows: {len(L['cnn_seeds'])})"
        axes[2].set_title(f"paper length: {L['epochs']} epochs, lr ×0.1 at {L['milestones']}, {seeds}", fontsize=9)
        axes[2].set_ylabel("test accuracy (%)")
    if len(sweep):  # both FTP readings over γ at paper length, against the paper-length BP rows
        hue = [label for label, _ in READINGS if label in set(sweep.method)]
        sns.lineplot(sweep, x="gamma", y="final_test_acc", hue="method", hue_order=hue, marker="o",
                     errorbar=("pi", 100), ax=axes[3])
        mark_diverged(axes[3], sweep, "gamma")
        val = part_of(fin, "val_gamma", unlabelled="table")
        if len(val):  # γ chosen on the held-out split: validation accuracy (dashed) and the pick's test accuracy (★)
            picks = _val_gamma(val, long_all, P)["val_gamma"]
            for i, (label, key) in enumerate((r for r in READINGS if r[0] in hue)):
                v = val[val.method == label].groupby("gamma").final_val_acc.mean()
                axes[3].plot(v.index, v.values, ls="--", marker="s", mfc="none", c=f"C{i}", lw=1,
                             label=f"{label}: validation accuracy ({L['val_gamma']:,} held out)")
                r = picks.get(key, {})
                if "final_test_acc" in r:
                    axes[3].scatter([r["gamma"]], [r["final_test_acc"]["mean"]], marker="*", s=180, c=f"C{i}",
                                    edgecolors="k", zorder=7, label=f"{label}: γ chosen on validation")
        bp = long[long.method == "BP"].final_test_acc
        if len(bp):
            axes[3].axhline(bp.mean(), ls="--", c="k", lw=1, label=f"BP, {L['epochs']} epochs ({bp.mean():.2f} %)")
            axes[3].axhline(bp.mean() - 2, ls=":", c="0.5", lw=1, label="BP − 2 points (the claims' margin)")
        _gamma_axis(axes[3], sweep.gamma)
        # below the panel: inside, its nine entries covered the lines they name
        axes[3].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        axes[3].set_title(f"FTP γ sensitivity at {L['epochs']} epochs, both readings (band: min–max over seeds)"
                          + ("\ndashed: accuracy on the held-out split; ★: test accuracy at the γ chosen there"
                             if len(val) else ""), fontsize=9)
        axes[3].set_ylabel("test accuracy (%)")
    fig.suptitle(budget(P), fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ quantised training
LEVELS = {"weights": {"weights": True},
          "weights+activations": {"weights": True, "activations": True},
          "full": {"weights": True, "activations": True, "signals": True},
          # ablations of "full": weights, activations and ONE kind of learning signal rounded (quant.SIGNAL_KINDS)
          **{f"weights+activations+{k}": {"weights": True, "activations": True, "signals": [k]}
             for k in SIGNAL_KINDS}}


def bits_axis(ax, values) -> None:
    """A bit-width (or bit-count) x axis: log₂ scale, a tick at every value present, most bits on the left."""
    ticks = sorted(set(values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.invert_xaxis()


def _stable_gamma(P: dict, section: str) -> float | None:
    """``<section>.stable_gamma``: a γ at which the FTP readings train in float (our labelled addition; the
    spec's γ 0.2 does not train τ₁), or None (off)."""
    g = P.get("stable_gamma")
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0):
        raise ConfigError(f"{section}.stable_gamma={g!r} must be a number > 0, or null (off)")
    return None if g is None else float(g)


def _gamma_labelled(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of a part at another γ, each method labelled with its γ (a method of its own in a figure)."""
    return rows.assign(method=[f"{m}, γ {g:g}" for m, g in zip(rows.method, rows.gamma)])


def _with_stable(fin: pd.DataFrame, P: dict | None, part: str = "sweep") -> tuple[pd.DataFrame, str]:
    """A figure's measured ``part`` rows (``sweep``, or e.g. ``paper_length``) plus its stable-γ rows
    (``stable_gamma``, ``<part>_stable_gamma``) as methods of their own (labelled with their γ), and the title
    line that says so (empty without them)."""
    d = measured(part_of(fin, part))
    stable = measured(part_of(fin, "stable_gamma" if part == "sweep" else f"{part}_stable_gamma"))
    if not len(stable):
        return d, ""
    d = pd.concat([d, _gamma_labelled(stable)])
    return d, (f"\nFTP at the spec's γ {P['gamma']:g} unless labelled (γ {stable.gamma.iloc[0]:g}: ours)" if P else "")


def quantized_jobs(P: dict, dataset: str) -> list[dict]:
    """ftp.md §3.2 protocol: the same nets and training for every method; bit widths swept; three
    ablation levels (weights; + activations; + learning signals); 32 bits = float for all levels.
    ``signal_ablation`` (optional; our addition, not in the spec) adds a smaller grid — its own levels,
    bits, methods and seeds — over the finer levels that round a single kind of learning signal: which
    rounded signal breaks a rule. Jobs carry ``part`` (``sweep`` or ``signal_ablation``)."""
    A = P.get("signal_ablation") or {}
    for name, levels in (("levels", P["levels"]), ("signal_ablation.levels", A.get("levels", []))):
        check_known(f"ftp_quantized.{name}", levels, LEVELS)

    def grid(part, seeds, levels, bits, methods, keep=lambda m, seed: True, Q=P, hw=None, **meta):
        return [_fc_job(Q, dataset, m, seed, bits=b, level=level, part=part, **meta,
                        hardware={"bits": b, **LEVELS[level], "weight_rounding": P["weight_rounding"], **(hw or {})}
                        if b < 32 else None)
                for seed in seeds for level in levels for b in bits for m in methods if keep(m, seed)]
    # the sweep's context methods (PEPITA, DRTP) may run fewer seeds (seeds_by_method; cost)
    jobs = grid("sweep", P["seeds"], P["levels"], P["bits"], P["methods"],
                seed_filter(P, "ftp_quantized", P["methods"]))
    g = _stable_gamma(P, "ftp_quantized")
    if g is not None:  # the FTP readings again at a γ at which they train in float (labelled; BP has no γ)
        ftp = [m for m in P["methods"] if m in dict(READINGS)]
        jobs += grid("stable_gamma", P["seeds"], P["levels"], P["bits"], ftp, Q={**P, "gamma": g}, gamma=g)
    if A:
        jobs += grid("signal_ablation", A.get("seeds", P["seeds"]), A["levels"], A["bits"], A["methods"])
    M = _master_copy(P)
    if M:  # the full level again with a float master copy of the weights (our labelled variant; BP included)
        methods = [m for m in M["methods"] if m in P["methods"]]
        mc = {"hw": {"master_copy": True}}
        jobs += grid("master_copy", M["seeds"], ["full"], M["bits"], methods, **mc)
        if g is not None:
            jobs += grid("master_copy_stable_gamma", M["seeds"], ["full"], M["bits"],
                         [m for m in methods if m in dict(READINGS)], Q={**P, "gamma": g}, gamma=g, **mc)
    L = _paper_length(P)
    if L:  # the full level again at the spec's length (labelled part; the sweep's epochs are a CPU budget)
        Q = {**P, "epochs": L["epochs"], "milestones": L["milestones"]}
        methods = [m for m in L["methods"] if m in P["methods"]]
        jobs += grid("paper_length", L["seeds"], ["full"], L["bits"], methods, Q=Q, epochs=L["epochs"])
        if g is not None:
            jobs += grid("paper_length_stable_gamma", L["seeds"], ["full"], L["bits"],
                         [m for m in methods if m in dict(READINGS)], Q={**Q, "gamma": g}, gamma=g,
                         epochs=L["epochs"])
    return jobs


def _master_copy(P: dict) -> dict | None:
    """``ftp_quantized.master_copy`` (our variant, labelled; not in the spec): ``bits`` (< 32), ``methods`` (of
    the sweep's) and ``seeds`` to run again at the ``full`` level with ``hardware.master_copy`` — a float copy of
    every weight kept beside the stored, rounded one (repro/quant.py) — and the FTP readings among them also at
    ``stable_gamma`` when that is set; None or {} = off. Only the methods also in ``methods`` run (a sweep
    narrowed with ``dvc exp run -S ftp_quantized.methods=…`` narrows this part too)."""
    M = P.get("master_copy")
    if not M:
        return None
    name = "ftp_quantized.master_copy"
    if not isinstance(M, dict) or set(M) != {"bits", "methods", "seeds"}:
        raise ConfigError(f"{name}={M!r} must be null or a mapping with exactly bits, methods and seeds")
    if not M["bits"] or not all(isinstance(b, int) and not isinstance(b, bool) and 2 <= b < 32 for b in M["bits"]):
        raise ConfigError(f"{name}.bits={M['bits']!r} must be a non-empty list of integers 2 … 31 "
                          "(32 bits is float: the sweep's runs, the same with or without a copy)")
    return _methods_seeds(P, M, name)


def _paper_length(P: dict) -> dict | None:
    """``ftp_quantized.paper_length`` (labelled part): the ``full`` level again at other ``epochs`` and lr
    ``milestones`` — the spec's 100 epochs, ×0.1 at 60 and 90 — for the ``methods`` (of the sweep's), ``seeds``
    and ``bits`` given (32 = each method's float run, the checks' reference: required), the FTP readings also at
    ``stable_gamma`` when that is set; None or {} = off. Its runs are the ones a spec-scale sweep
    (``python -m repro spec``) trains for the same points, so neither retrains the other's."""
    L = P.get("paper_length")
    if not L:
        return None
    name = "ftp_quantized.paper_length"
    keys = ("bits", "epochs", "methods", "milestones", "seeds")
    if not isinstance(L, dict) or set(L) != set(keys):
        raise ConfigError(f"{name}={L!r} must be null or a mapping with exactly {', '.join(keys)}")
    e = L["epochs"]
    if isinstance(e, bool) or not isinstance(e, int) or e < 1:
        raise ConfigError(f"{name}.epochs={e!r} must be an integer ≥ 1")
    ms = L["milestones"]
    if not isinstance(ms, list) or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x < e for x in ms):
        raise ConfigError(f"{name}.milestones={ms!r} must be a list of epochs between 1 and epochs − 1 ({e - 1})")
    b = L["bits"]
    if (not isinstance(b, list) or 32 not in b
            or not all(isinstance(x, int) and not isinstance(x, bool) and 2 <= x <= 32 for x in b)):
        raise ConfigError(f"{name}.bits={b!r} must be a list of integers 2 … 32 that includes 32 (each method's "
                          "float run: what its drops are measured from)")
    return _methods_seeds(P, L, name)


def _methods_seeds(P: dict, M: dict, name: str) -> dict:
    """A labelled part's (``master_copy``, ``paper_length``) ``methods`` (FC methods) and ``seeds`` (integers),
    checked; ``M`` back."""
    known = list(_fc_rules(P))
    if not M["methods"] or [m for m in M["methods"] if m not in known]:
        raise ConfigError(f"{name}.methods={M['methods']!r}: must be a non-empty list of FC methods ({known})")
    if not M["seeds"] or not all(isinstance(x, int) and not isinstance(x, bool) for x in M["seeds"]):
        raise ConfigError(f"{name}.seeds={M['seeds']!r} must be a non-empty list of integers")
    return M


def run_quantized(P: dict, dataset: str, results: str = "results"):
    return _run(quantized_jobs(P, dataset), dataset, "ftp_quantized", P, results)


TRAINED_MIN_ACC = 50.0  # % — a method whose clean (32-bit) run is below this did not learn (MNIST chance: 10 %)



def quantized_stats(fin: pd.DataFrame, part: str = "sweep") -> pd.DataFrame:
    """Final test accuracy over seeds (``agg``: mean, std, min, max, n) per level, method and bit width of
    one part of the jobs; diverged runs count at their measured, chance-level accuracy."""
    return pd.DataFrame([{"level": lvl, "method": m, "bits": b, **agg(g.final_test_acc)}
                         for (lvl, m, b), g in measured(part_of(fin, part)).groupby(["level", "method", "bits"])])


# the keys of one _robustness result, in the order the notebook prints them
ROBUSTNESS_KEYS = tuple(f"{key}_{k}" for _, key in READINGS
                        for k in ("fp32_within_2_of_bp", "degrades_less_than_bp_le4", "compared_at_le4"))


def robustness_summary(m: dict) -> dict:
    """The claims' quantisation checks of one metrics dict (the sweep's, or its ``stable_gamma`` part)."""
    return {k: m.get(k) for k in ROBUSTNESS_KEYS}


def _robustness(full: dict, bp: dict) -> dict:
    """The claims' checks on one level's mean accuracies (``{method: {bits: mean}}``) against BP's
    (``{bits: mean}``): per FTP reading, 32 bits within 2 points of BP, and a smaller drop from its own 32-bit
    accuracy than BP's at every bit width ≤ 4 where either of the two still learns (≥ ``TRAINED_MIN_ACC``;
    listed under ``…_compared_at_le4``). A width where both are at chance says nothing — the reading with the
    lower 32-bit accuracy would "drop less" — so it is left out, as in the noise checks (``_noise_checks``);
    with no width left, or a 32-bit run that did not learn, the check fails: nothing was kept."""
    out: dict = {}
    for m, key in READINGS:
        if m not in full or "32" not in full[m] or "32" not in bp:
            continue
        out[f"{key}_fp32_within_2_of_bp"] = bool(bp["32"] - full[m]["32"] <= 2.0)
        low = sorted((b for b in full[m] if int(b) <= 4 and b in bp), key=int, reverse=True)
        if low:  # drop from each method's own 32-bit accuracy, at every bit width ≤ 4
            drops = {b: (full[m]["32"] - full[m][b], bp["32"] - bp[b]) for b in low}
            live = [b for b in low if max(full[m][b], bp[b]) >= TRAINED_MIN_ACC]
            out[f"{key}_drops_le4_bits"] = {b: {m: f, "BP": bp_drop} for b, (f, bp_drop) in drops.items()}
            out[f"{key}_compared_at_le4"] = live
            out[f"{key}_degrades_less_than_bp_le4"] = bool(full[m]["32"] >= TRAINED_MIN_ACC and live
                                                           and all(drops[b][0] < drops[b][1] for b in live))
    return out


def _means(stats: pd.DataFrame) -> tuple[dict, dict]:
    """``quantized_stats`` as ``{level: {method: {bits: mean}}}`` and the same for the sd."""
    acc: dict = {}
    sd: dict = {}
    for r in stats.itertuples():
        acc.setdefault(r.level, {}).setdefault(r.method, {})[str(r.bits)] = r.mean
        sd.setdefault(r.level, {}).setdefault(r.method, {})[str(r.bits)] = r.std
    return acc, sd


def quantized_metrics(fin: pd.DataFrame) -> dict:
    """Mean (and sd over seeds) final accuracy per level, method and bit width (``quantized_stats``) and the
    claims' checks on the ``full`` level (:func:`_robustness`). The ``stable_gamma`` part (the FTP readings
    at another γ) gets the same numbers and checks under ``stable_gamma``, against the sweep's BP runs."""
    ablation = quantized_stats(fin, "signal_ablation")
    stable = part_of(fin, "stable_gamma")
    mc = master_copy_metrics(fin)  # its float points are the sweep's and the stable part's
    full_fin, fin = fin, part_of(fin)
    acc, sd = _means(quantized_stats(fin))
    out = {"final_test_acc": acc, "final_test_acc_sd": sd, "seeds": sorted(int(s) for s in set(fin.seed)),
           "diverged": {lvl: _diverged(d) for lvl, d in fin.groupby("level")}}
    full = acc.get("full", {})
    out.update(_robustness(full, full.get("BP", {})))
    if len(stable):
        s_acc, s_sd = _means(quantized_stats(stable, "stable_gamma"))
        out["stable_gamma"] = {"gamma": float(stable.gamma.iloc[0]), "final_test_acc": s_acc,
                               "final_test_acc_sd": s_sd, "seeds": sorted(int(s) for s in set(stable.seed)),
                               "diverged": {lvl: _diverged(d) for lvl, d in stable.groupby("level")},
                               **_robustness(s_acc.get("full", {}), full.get("BP", {}))}
    if mc:
        out["master_copy"] = mc
    pl = paper_length_metrics(full_fin)
    if pl:
        out["paper_length"] = pl
    if len(ablation):  # level → method → bits → {mean, std, min, max, n}
        out["signal_ablation"] = {}
        for r in ablation.itertuples():
            out["signal_ablation"].setdefault(r.level, {}).setdefault(r.method, {})[str(r.bits)] = {
                k: getattr(r, k) for k in ("mean", "std", "min", "max", "n")}
    return out


def _full_means(fin: pd.DataFrame, part: str) -> tuple[dict, dict]:
    """One part's ``full``-level mean and sd final accuracy, ``{method: {bits: value}}`` each."""
    acc, sd = _means(quantized_stats(fin, part))
    return acc.get("full", {}), sd.get("full", {})


def _part_and_stable_twin(fin: pd.DataFrame, base: str, summary) -> dict:
    """A labelled part (``master_copy``, ``paper_length``) and its ``<base>_stable_gamma`` twin: ``summary(part,
    rows)`` of each that ran, the twin's under ``stable_gamma`` with its γ. {} when neither ran."""
    out: dict = {}
    for part in (base, f"{base}_stable_gamma"):
        rows = part_of(fin, part)
        if not len(rows):
            continue
        res = summary(part, rows)
        if part == base:
            out.update(res)
        else:
            out["stable_gamma"] = {"gamma": float(rows.gamma.iloc[0]), **res}
    return out


def paper_length_metrics(fin: pd.DataFrame) -> dict:
    """The ``paper_length`` parts (:func:`_paper_length`): epochs, mean (sd) final accuracy per method and bit
    width, diverged runs, and the claims' checks (:func:`_robustness`) — against BP's runs of the same length;
    the readings at ``stable_gamma`` under ``stable_gamma``, against the same BP runs. {} when not run."""
    bp = _full_means(fin, "paper_length")[0].get("BP", {})

    def summary(part, rows):
        acc, sd = _full_means(fin, part)
        return {"epochs": int(rows.epochs.iloc[0]), "final_test_acc": acc, "final_test_acc_sd": sd,
                "seeds": sorted(int(x) for x in set(rows.seed)), "diverged": _diverged(rows),
                **_robustness({m: v for m, v in acc.items() if m != "BP"}, bp)}
    return _part_and_stable_twin(fin, "paper_length", summary)


def master_copy_metrics(fin: pd.DataFrame) -> dict:
    """The ``master_copy`` parts (:func:`_master_copy`): mean (sd) final accuracy per method and bit width, and
    the claims' checks (:func:`_robustness`) with the copy — each method's drop from its own float run (32 bits:
    the sweep's, and the ``stable_gamma`` part's for the readings at that γ; a copy changes nothing in float)
    against BP's drop with the copy (BP has no γ: the readings at stable_gamma are compared with the same BP
    runs). {} when the parts did not run."""
    floats = {"master_copy": _full_means(fin, "sweep")[0],
              "master_copy_stable_gamma": _full_means(fin, "stable_gamma")[0]}

    def with_32(part, m, accs):  # a method's accuracies with the copy, beside its float (32-bit) run
        f = floats[part].get(m, {})
        return {**({"32": f["32"]} if "32" in f else {}), **accs}
    bp = with_32("master_copy", "BP", _full_means(fin, "master_copy")[0].get("BP", {}))

    def summary(part, rows):
        acc, sd = _full_means(fin, part)
        return {"final_test_acc": acc, "final_test_acc_sd": sd, "seeds": sorted(int(x) for x in set(rows.seed)),
                "diverged": int((rows.status != "ok").sum()),
                **_robustness({m: with_32(part, m, v) for m, v in acc.items() if m != "BP"}, bp)}
    return _part_and_stable_twin(fin, "master_copy", summary)


def plot_master_copy(fin: pd.DataFrame, dataset: str, P: dict | None = None):
    """``full`` level, final accuracy vs bits of the methods in ``master_copy``: left as the sweep stores the
    weights (rounded, nothing else kept), right with a float master copy; 32 bits (float) is the same run in
    both panels."""
    base, _ = _with_stable(fin, P)
    base = base[base.level == "full"]
    mc = measured(part_of(fin, "master_copy"))
    mcs = measured(part_of(fin, "master_copy_stable_gamma"))
    mc = pd.concat([mc, _gamma_labelled(mcs)])
    base = base[base.method.isin(set(mc.method))]
    left, right = "weights stored rounded (the sweep)", "float master copy (our variant)"
    d = pd.concat([base.assign(storage=left), mc.assign(storage=right),
                   base[base.bits == 32].assign(storage=right)], ignore_index=True)
    order = list(dict.fromkeys(base.method))
    g = sns.relplot(d, x="bits", y="final_test_acc", hue="method", hue_order=order, col="storage",
                    col_order=[left, right], kind="line", marker="o", errorbar=("pi", 100), height=3.6, aspect=1.3)
    for (storage, ax) in g.axes_dict.items():
        sub = d[d.storage == storage]
        sns.scatterplot(sub, x="bits", y="final_test_acc", hue="method", hue_order=order, s=16, alpha=0.6,
                        legend=False, ax=ax)
        mark_diverged(ax, sub, "bits")
        bits_axis(ax, d.bits)
    g.set_titles("{col_name}", size=9)
    g.set_axis_labels("bits (32 = float)", "final test accuracy (%)")
    seeds = sorted(set(mc.seed))
    g.figure.suptitle(f"Quantised training with and without a float master copy of the weights, {dataset} (full "
                      f"level; master copy: seeds {seeds})\nline: mean over seeds; band: min–max; dots: seeds; × = "
                      "diverged" + (f"\n{budget(P)}" if P else ""), y=1.12 if P else 1.06, fontsize=10)
    return g.figure


def ablation_weight_norms(P: dict, dataset: str, results: str = "results") -> pd.DataFrame:
    """Frobenius norm of each weight matrix at the end of every ``signal_ablation`` run (from its stored
    weights; a run whose weights this checkout lacks is retrained for them): a blow-up shows as one
    layer's norm running away, which tells which loop the rounded signal feeds."""
    store = store_for(f"ftp_quantized/{dataset}", results)
    rows = []
    for j in quantized_jobs(P, dataset):
        if j["part"] != "signal_ablation":
            continue
        model, _ = store.load_weights(j["config"])
        for k, lin in enumerate(model.layers, start=1):
            rows.append({"level": j["level"], "method": j["method"], "bits": j["bits"], "seed": j["seed"],
                         "layer": f"W{k}", "norm": float(lin.weight.norm())})
    return pd.DataFrame(rows)


def ablation_norm_metrics(norms: pd.DataFrame) -> dict:
    """level → method → bits → layer → the largest end-of-run ‖W‖ over seeds. Weights that overflowed to inf
    or NaN count as inf (pandas' max would skip a NaN: the worst blow-up would vanish from the number)."""
    out: dict = {}
    for (lvl, m, b, lay), g in norms.groupby(["level", "method", "bits", "layer"]):
        v = g.norm.to_numpy(dtype=float)
        out.setdefault(lvl, {}).setdefault(m, {}).setdefault(str(b), {})[lay] = (
            float(v.max()) if np.isfinite(v).all() else float("inf"))
    return out


def plot_signal_ablation(fin: pd.DataFrame, norms: pd.DataFrame, dataset: str):
    """Left: final accuracy per single-signal level (bars: mean over seeds, dots: seeds), one hue per bit
    width; right: the weight norms of those runs per layer (log scale)."""
    d = part_of(fin, "signal_ablation").copy()
    short = {lvl: lvl.replace("weights+activations", "w+a") for lvl in LEVELS}
    order = [short[lvl] for lvl in LEVELS if lvl in set(d.level)]
    d["level"], norms = d.level.map(short), norms.assign(level=norms.level.map(short))
    hue_order = [f"{b} bits" for b in sorted(set(d.bits), reverse=True)]
    d["bits"] = d.bits.astype(str) + " bits"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    sns.barplot(d, x="level", y="final_test_acc", hue="bits", order=order, hue_order=hue_order, errorbar=None,
                palette="viridis", alpha=0.7, ax=axes[0])
    with fixed_jitter():
        sns.stripplot(d, x="level", y="final_test_acc", hue="bits", order=order, hue_order=hue_order, dodge=True,
                      palette=["0.2"] * len(hue_order), size=4, legend=False, ax=axes[0])
    axes[0].set(ylabel="final test accuracy (%)", xlabel="rounded (w+a = weights and activations)",
                title=f"{', '.join(sorted(set(d.method)))}: which rounded signal breaks it?")
    ok = np.isfinite(norms.norm.to_numpy(dtype=float))  # overflowed (inf / NaN) weights cannot sit on a log axis
    sns.barplot(norms[ok], x="level", y="norm", hue="layer", order=order, hue_order=sorted(set(norms.layer)),
                estimator="median", errorbar=("pi", 100), ax=axes[1])
    axes[1].set_yscale("log")
    bad = norms[~ok].groupby("level").size()
    if len(bad):  # say which runs are missing from the bars instead of dropping them silently
        axes[1].text(0.01, 0.98, "not finite (overflowed), left out: " + ", ".join(
            f"{lvl} {n} {'matrix' if n == 1 else 'matrices'}" for lvl, n in bad.items()), transform=axes[1].transAxes,
            va="top", fontsize=8, color="0.3")
    axes[1].set(ylabel="‖W‖ at the end (Frobenius, log)", xlabel="rounded",
                title="weight norms at the end (bar: median, line: min–max of the finite ones)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"FTP quantisation, {dataset}: rounding one kind of learning signal at a time "
                 f"(seeds {sorted(set(d.seed))})", fontsize=10)
    fig.tight_layout()
    return fig


def _sparsity_jobs(P: dict, dataset: str, level: str) -> list[dict]:
    """The sweep's own runs of one level and its first seed, selected by ``part`` (a labelled part's runs at the
    same bits and seed would be averaged in with the sweep's; naming each part to switch off missed a new one)."""
    return [j for j in quantized_jobs({**P, "seeds": P["seeds"][:1], "levels": [level]}, dataset)
            if j["part"] == "sweep"]


@torch_threads(1)  # as the runs train: the same digits at any core count
def update_sparsity(P: dict, dataset: str, steps: int = 20, level: str = "full") -> pd.DataFrame:
    """ftp.md §8: per weight layer, the fraction of update entries that are exactly zero after rounding
    (``zero_update``: the rule wrote 0 into ``.grad`` — the rounded learning signal vanished) and the
    fraction of weights left unchanged by the step (``frozen``: optimizer step, then stored-weight
    rounding), over the first ``steps`` training steps of each quantised run (seed ``P.seeds[0]``),
    started exactly as the run starts (``train.build``). No training beyond those steps: a diagnostic of
    the mechanism behind a BP-vs-FTP gap, cheap enough for every bit width."""
    jobs = _sparsity_jobs(P, dataset, level)
    dev = resolve_device(P["device"])
    data = load_data(normalize_config(jobs[0]["config"]), dev)
    rows = []
    for j in jobs:
        cfg = normalize_config(j["config"])
        model, rule = build(cfg, dev, data)
        params = rule.trainable(model)
        opt, _ = make_optimizer(params, cfg["optim"])
        perm = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(cfg["seed"])).to(dev)
        bs = cfg["batch_size"]
        for s in range(max(1, min(steps, len(perm) // bs))):
            idx = perm[s * bs:(s + 1) * bs]
            batch = Batch(idx, data.x_train[idx], data.y_train[idx])
            before = [p.detach().clone() for p in params]
            zero = []
            train_step(model, rule, opt, batch, params, inspect=lambda o: zero.extend(
                float((p.grad == 0).float().mean()) if p.grad is not None else 1.0 for p in params))
            for k, (p, b, z) in enumerate(zip(params, before, zero)):
                if p.dim() < 2:
                    continue  # biases: weights only
                rows.append({"method": j["method"], "bits": j["bits"], "param": k, "step": s,
                             "zero_update": 100 * z, "frozen": 100 * float((p.detach() == b).float().mean())})
    d = pd.DataFrame(rows)
    d["layer"] = d.groupby(["method", "bits"]).param.rank(method="dense").astype(int)
    return d.groupby(["method", "bits", "layer"], as_index=False)[["zero_update", "frozen"]].mean()


def sparsity_metrics(sp: pd.DataFrame) -> dict:
    """{method: {bits: [per-layer % zero updates]}} and the same for frozen weights."""
    out = {}
    for col in ("zero_update", "frozen"):
        out[col] = {m: {str(b): [round(float(v), 2) for v in gb.sort_values("layer")[col]]
                        for b, gb in g.groupby("bits")} for m, g in sp.groupby("method")}
    return out


def plot_quantized_loss(hist: pd.DataFrame, dataset: str, level: str = "full"):
    """Training loss per epoch at each bit width (one level): tells a run that blew up (loss → 10⁶, then
    stuck at ln 10 with a dead net) from one that stalled (loss flat from the start)."""
    h = part_of(hist)
    h = h[(h.level == level) & (h.epoch >= 1)]
    # one line per seed (no mean: a seed that blows up to 10²⁰ would hide the others)
    g = sns.relplot(h, x="epoch", y="train_loss", hue="method", units="seed", estimator=None, col="bits",
                    col_wrap=4, kind="line", marker=".", height=2.4, aspect=1.2, alpha=0.8,
                    col_order=sorted(set(h.bits), reverse=True), facet_kws={"sharey": False})
    g.set(yscale="log")
    g.set_titles("{col_name} bits", size=9)
    g.set_axis_labels("epoch", "training loss (log)")
    n = h.seed.nunique()
    g.figure.suptitle(f"Training loss under quantisation ({level} level), {dataset}"
                      + (f": one line per seed ({n} seeds)" if n > 1 else ""), y=1.03)
    return g.figure


def plot_sparsity(sp: pd.DataFrame, dataset: str, steps: int):
    d = sp.melt(id_vars=["method", "bits", "layer"], value_vars=["zero_update", "frozen"], var_name="what",
                value_name="percent")
    d["what"] = d.what.map({"zero_update": "update entries exactly 0", "frozen": "weights unchanged by the step"})
    g = sns.relplot(d, x="bits", y="percent", hue="method", col="layer", row="what", kind="line", marker="o",
                    height=2.6, aspect=1.2, facet_kws={"sharey": False})
    for ax in g.axes.flat:
        bits_axis(ax, d.bits)
    g.set_titles("{row_name}, layer {col_name}", size=8)
    g.set_axis_labels("bits (32 = float)", "% of the layer's weights")
    g.figure.suptitle(f"Updates zeroed by rounding, {dataset}: first {steps} steps from the runs' own init "
                      "(full level; ftp.md §8)", y=1.03)
    return g.figure


def plot_quantized(fin: pd.DataFrame, dataset: str, P: dict | None = None, part: str = "sweep"):
    """Final test accuracy vs bit width per level (the ``sweep``, or its ``paper_length`` part: the title then
    gives that part's epochs and seeds instead of the sweep's budget, and a second panel the best epoch's
    accuracy: over 100 epochs a run can learn and then collapse)."""
    d, gamma_line = _with_stable(fin, P, part)
    order = list(dict.fromkeys(d.method))
    if part == "paper_length":
        d = pd.concat([d.assign(level=[f"{x}: final epoch" for x in d.level]),
                       d.assign(level=[f"{x}: best epoch" for x in d.level], final_test_acc=d.best_test_acc)],
                      ignore_index=True)
    # band = min–max over seeds, dots = the seeds: a method that blows up in some seeds only is bimodal, and a
    # ± sd band would reach past 0 and 100 %
    g = sns.relplot(d, x="bits", y="final_test_acc", hue="method", hue_order=order, col="level", kind="line",
                    col_wrap=3 if d.level.nunique() > 3 else None, marker="o", errorbar=("pi", 100),
                    height=3.6, aspect=1.3)
    for (level, ax) in g.axes_dict.items():
        sns.scatterplot(d[d.level == level], x="bits", y="final_test_acc", hue="method", hue_order=order, s=16,
                        alpha=0.6, legend=False, ax=ax)
        mark_diverged(ax, d[d.level == level], "bits")
        bits_axis(ax, d.bits)
    g.set_axis_labels("bits (32 = float)", "test accuracy (%)" if part == "paper_length" else "final test accuracy (%)")
    ctx = [m for m in order if m in ("PEPITA", "DRTP")]  # not in the claims
    if part == "paper_length":
        L = _paper_length(P) if P else None
        n = sorted(set(d.seed))
        length = (f"\nthe spec's length: {L['epochs']} epochs, lr ×0.1 at {', '.join(map(str, L['milestones']))}; "
                  f"seed{'s' * (len(n) != 1)} {', '.join(map(str, n))} (spec: 3 seeds)") if L else ""
    else:
        length = f"\n{budget(P)}" if P else ""
    g.figure.suptitle(f"FTP vs BP{' (' + ', '.join(ctx) + ': context)' if ctx else ''} under quantisation, {dataset}\n"
                      "line: mean over seeds; band: min–max; dots: seeds; × = diverged"
                      + gamma_line + length,
                      y=1.08 if P is None else 1.13 + 0.04 * bool(gamma_line),
                      fontsize=10)
    return g.figure


# ftp.md §3.2 (H): one analog non-ideality at a time, float otherwise; the clean value is the plain run.
NOISE_KINDS = {
    "write_noise": ("H1 write noise κ (× max|W|, per update)", lambda v: {"write_noise": v}, 0.0),
    "read_noise": ("H2 read noise ρ (per forward pass)", lambda v: {"read_noise": v}, 0.0),
    "adc_bits": ("H3 ADC bits (activations)", lambda v: {"bits": v, "activations": True}, 32),
    "conductance_bits": ("H4 conductance bits (weights)",
                         lambda v: {"bits": v, "weights": True, "weight_rounding": "nearest"}, 32),
}


# the kinds that change the stored weights, which a float master copy can keep exact (the others act on reads)
STORED_KINDS = ("write_noise", "conductance_bits")


def noise_jobs(P: dict, dataset: str) -> list[dict]:
    """Each kind of ``P['noise']`` swept over its values for every method (FC net, PEPITA's training), part
    ``sweep``; with ``stable_gamma`` the FTP readings again at that γ (part ``stable_gamma``); with
    ``master_copy`` (:func:`_noise_master_copy`) its kinds' values again with ``hardware.master_copy`` (parts
    ``master_copy`` and, for the readings at ``stable_gamma``, ``master_copy_stable_gamma``)."""
    check_known("ftp_noise.noise", P["noise"], NOISE_KINDS)

    def grid(Q, methods, part, noise=P["noise"], hw=None, seeds=P["seeds"], **meta):
        return [_fc_job(Q, dataset, m, seed, kind=kind, value=v, part=part, **meta,
                        hardware={**NOISE_KINDS[kind][1](v), **(hw or {})} if v != NOISE_KINDS[kind][2] else None)
                for seed in seeds for kind, values in noise.items() for v in values for m in methods]
    jobs = grid(P, P["methods"], "sweep")
    g = _stable_gamma(P, "ftp_noise")
    readings = [m for m in P["methods"] if m in dict(READINGS)]
    if g is not None:
        jobs += grid({**P, "gamma": g}, readings, "stable_gamma", gamma=g)
    M = _noise_master_copy(P)
    if M:  # the weight-storing kinds again with a float master copy (our labelled variant; BP included)
        methods = [m for m in M["methods"] if m in P["methods"]]
        mc = {"noise": M["kinds"], "hw": {"master_copy": True}, "seeds": M["seeds"]}
        jobs += grid(P, methods, "master_copy", **mc)
        if g is not None:
            jobs += grid({**P, "gamma": g}, [m for m in methods if m in readings], "master_copy_stable_gamma",
                         gamma=g, **mc)
    return jobs


def _noise_master_copy(P: dict) -> dict | None:
    """``ftp_noise.master_copy`` (our variant, labelled; not in the spec): ``kinds`` (a mapping from H1
    ``write_noise`` and/or H4 ``conductance_bits`` to some of the sweep's noisy values of that kind), ``methods``
    (of the sweep's) and ``seeds``, run again with ``hardware.master_copy`` — a float copy of every weight, so that
    programming errors and rounding land on the stored weight of each write and do not add up (repro/quant.py);
    the FTP readings among the methods also at ``stable_gamma`` when that is set. None or {} = off."""
    M = P.get("master_copy")
    if not M:
        return None
    name = "ftp_noise.master_copy"
    if not isinstance(M, dict) or set(M) != {"kinds", "methods", "seeds"}:
        raise ConfigError(f"{name}={M!r} must be null or a mapping with exactly kinds, methods and seeds")
    K = M["kinds"]
    if not isinstance(K, dict) or not K or set(K) - set(STORED_KINDS):
        raise ConfigError(f"{name}.kinds={K!r} must map some of {list(STORED_KINDS)} (the kinds that change the "
                          "stored weights; read noise and ADC bits act on reads, where a copy changes nothing) "
                          "to lists of values")
    for kind, values in K.items():
        noisy = [v for v in P["noise"].get(kind, []) if v != NOISE_KINDS[kind][2]]
        if not isinstance(values, list) or not values or [v for v in values if v not in noisy]:
            raise ConfigError(f"{name}.kinds.{kind}={values!r} must be a non-empty list of the sweep's noisy "
                              f"values of {kind} ({noisy}): each is compared with the same setting stored "
                              "without a copy")
    return _methods_seeds(P, M, name)


def run_noise(P: dict, dataset: str, results: str = "results"):
    return _run(noise_jobs(P, dataset), dataset, "ftp_noise", P, results)


def noise_metrics(fin: pd.DataFrame) -> dict:
    """Mean final accuracy per kind, method and value; per kind, each method's drop from its clean run to
    the harshest setting, and whether FTP's drop is smaller than BP's (ftp.md §5 item 2's claim).

    The comparison is made at the harshest setting at which BP or that FTP reading still learns
    (≥ ``TRAINED_MIN_ACC``): where both sit at chance, the drops compare the clean accuracies, not
    robustness (FTP's lower clean accuracy would "drop less"). If no noisy setting qualifies the claim
    fails (robustness not shown), as does a reading that never learned clean.

    The ``stable_gamma`` part (the FTP readings at another γ) gets the same numbers and checks under
    ``stable_gamma``, against the sweep's BP runs (BP has no γ)."""
    stable = part_of(fin, "stable_gamma")
    mc = noise_master_copy_metrics(fin)
    fin = part_of(fin)
    out = _noise_checks(fin)
    if len(stable):
        out["stable_gamma"] = {"gamma": float(stable.gamma.iloc[0]),
                               **_checks_beside_bp(fin[fin.method == "BP"], stable)}
    if mc:
        out["master_copy"] = mc
    return out


def _checks_beside_bp(bp: pd.DataFrame, rows: pd.DataFrame, own: pd.DataFrame | None = None) -> dict:
    """:func:`_noise_checks` of FTP readings' ``rows`` (at another γ: BP has none) judged against BP's runs
    ``bp``; its numbers (accuracies, seeds, diverged runs) are those of ``own`` (default ``rows``) alone."""
    own = rows if own is None else own
    s = _noise_checks(pd.concat([bp, rows], ignore_index=True))
    s["final_test_acc"] = {k: {m: v for m, v in per.items() if m != "BP"} for k, per in s["final_test_acc"].items()}
    s["diverged"] = {k: int((d.status != "ok").sum()) for k, d in own.groupby("kind")}
    return {"seeds": sorted(int(x) for x in set(own.seed)), **s}


def _clean_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Each kind's clean point (0 noise, 32 bits): the plain float run."""
    return rows[[v == NOISE_KINDS[k][2] for k, v in zip(rows.kind, rows.value)]]


def noise_master_copy_metrics(fin: pd.DataFrame) -> dict:
    """The ``master_copy`` parts (:func:`_noise_master_copy`): the checks and numbers of :func:`noise_metrics`
    with the copy — per kind, each method's clean run (the sweep's; the ``stable_gamma`` part's for the readings
    at that γ: on clean hardware a copy changes nothing) and its runs with the copy, against BP's clean run and
    BP's runs with the copy (BP has no γ: the readings at stable_gamma are judged against the same BP runs).
    ``final_test_acc`` has the clean points beside the runs with the copy; ``diverged`` and ``seeds`` are those
    of the runs with the copy. {} when not run."""
    mc, mcs = part_of(fin, "master_copy"), part_of(fin, "master_copy_stable_gamma")
    if not len(mc) and not len(mcs):
        return {}
    kinds = set(mc.kind) | set(mcs.kind)

    def clean(part, methods):
        r = _clean_rows(part_of(fin, part))
        return r[r.kind.isin(kinds) & r.method.isin(set(methods))]
    out: dict = {}
    if len(mc):
        out = _noise_checks(pd.concat([clean("sweep", mc.method), mc], ignore_index=True))
        out["diverged"] = {k: int((d.status != "ok").sum()) for k, d in mc.groupby("kind")}
        out["seeds"] = sorted(int(x) for x in set(mc.seed))
    if len(mcs):
        out["stable_gamma"] = {"gamma": float(mcs.gamma.iloc[0]),
                               **_checks_beside_bp(pd.concat([clean("sweep", ["BP"]), mc[mc.method == "BP"]]),
                                                   pd.concat([clean("stable_gamma", mcs.method), mcs]), own=mcs)}
    return out


def _noise_checks(fin: pd.DataFrame) -> dict:
    """:func:`noise_metrics` on one set of runs (one row per kind, method, value and seed)."""
    ok, f = measured(fin), (lambda v: f"{float(v):g}")  # 32 and 32.0 alike; diverged at measured accuracy
    acc = {k: {m: {f(v): float(g[g.value == v].final_test_acc.mean()) for v in sorted(set(g.value))}
               for m, g in d.groupby("method")} for k, d in ok.groupby("kind")}
    out: dict = {"final_test_acc": acc, "diverged": {k: int((d.status != "ok").sum()) for k, d in fin.groupby("kind")},
                 "drop_at_harshest": {}, "compared_at": {}}
    for kind, per in acc.items():
        clean = NOISE_KINDS[kind][2]
        values = sorted(set(fin[fin.kind == kind].value))
        harsh = values[-1] if clean == 0.0 else values[0]  # largest noise, or fewest bits
        drops = {m: a[f(clean)] - a.get(f(harsh), float("nan")) for m, a in per.items() if f(clean) in a}
        out["drop_at_harshest"][kind] = {"value": harsh, **drops}
        noisy = [v for v in (values if clean == 0.0 else values[::-1]) if v != clean]  # mild → harsh
        for m, key in READINGS:  # a reading that never learned fails (as above)
            if m not in drops or "BP" not in drops or not noisy:
                continue
            live = [v for v in noisy if max(per[m].get(f(v), float("nan")), per["BP"].get(f(v), float("nan")))
                    >= TRAINED_MIN_ACC]
            at = live[-1] if live else None
            out["compared_at"].setdefault(kind, {})[m] = at
            holds = at is not None and per[m][f(clean)] >= TRAINED_MIN_ACC and (
                per[m][f(clean)] - per[m].get(f(at), float("nan"))
                < per["BP"][f(clean)] - per["BP"].get(f(at), float("nan")))
            out[f"{key}_more_robust_{kind}"] = bool(holds)
    return out


def plot_noise(fin: pd.DataFrame, dataset: str, P: dict | None = None):
    d, gamma_line = _with_stable(fin, P)
    kinds = [k for k in NOISE_KINDS if k in set(d.kind)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.8 * len(kinds), 3.4), squeeze=False)
    order = list(dict.fromkeys(d.method))
    for ax, kind in zip(axes[0], kinds):
        sub = d[d.kind == kind]
        # band = min–max over seeds, dots = the seeds (as the quantisation figure): seeds that split between
        # chance and ≈ 93 % would give a ± sd band past 0 and 100 %
        sns.lineplot(sub, x="value", y="final_test_acc", hue="method", hue_order=order, marker="o",
                     errorbar=("pi", 100), ax=ax, legend=ax is axes[0][0])
        sns.scatterplot(sub, x="value", y="final_test_acc", hue="method", hue_order=order, s=16, alpha=0.6,
                        legend=False, ax=ax)
        mark_diverged(ax, sub, "value")
        if NOISE_KINDS[kind][2] == 32:  # bit widths: fewer bits to the right
            bits_axis(ax, sub.value)
        ax.set_title(NOISE_KINDS[kind][0], fontsize=10)
        ax.set_xlabel(kind)
        ax.set_ylabel("final test accuracy (%)" if ax is axes[0][0] else "")
    fig.suptitle(f"FTP vs BP under analog non-idealities, {dataset}\n"
                 "line: mean over seeds; band: min–max; dots: seeds; × = diverged"
                 + gamma_line + (f"\n{budget(P)}" if P else ""),
                 y=1.02 if P is None else 1.1 + 0.04 * bool(gamma_line))
    fig.tight_layout()
    return fig


def plot_noise_master_copy(fin: pd.DataFrame, dataset: str, P: dict | None = None):
    """The kinds in ``master_copy``, one column each: top, final accuracy vs each setting for its methods with
    weights stored as written (the sweep: dashed) and with a float master copy (solid); the clean point (the
    plain float run) is shared. Bottom: the runs with the copy alone, on their own accuracy scale (their drops
    are a point or less: invisible on the top row's), with every seed as a dot."""
    d, gamma_line = _with_stable(fin, P)
    mc = measured(part_of(fin, "master_copy"))
    mcs = measured(part_of(fin, "master_copy_stable_gamma"))
    mc = pd.concat([mc, _gamma_labelled(mcs)])
    kinds = [k for k in NOISE_KINDS if k in set(mc.kind)]
    order = list(dict.fromkeys(m for m in d.method if m in set(mc.method)))
    left, right = "stored as written (the sweep)", "float master copy (our variant)"
    base = d[d.kind.isin(kinds) & d.method.isin(order)]
    base = base[[v == NOISE_KINDS[k][2] or v in set(mc[mc.kind == k].value) for k, v in zip(base.kind, base.value)]]
    clean = _clean_rows(base).assign(storage=right)
    both = pd.concat([base.assign(storage=left), mc.assign(storage=right), clean], ignore_index=True)
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.6 * len(kinds), 6.6), squeeze=False, sharex="col")
    for col, kind in enumerate(kinds):
        top, zoom = axes[0][col], axes[1][col]
        sub = both[both.kind == kind]
        sns.lineplot(sub, x="value", y="final_test_acc", hue="method", hue_order=order, style="storage",
                     style_order=[right, left], marker="o", errorbar=("pi", 100), ax=top, legend=col == 0)
        mark_diverged(top, sub, "value")
        top.set_ylim(0, 100)
        top.set_title(NOISE_KINDS[kind][0], fontsize=10)
        copy = sub[sub.storage == right]
        sns.lineplot(copy, x="value", y="final_test_acc", hue="method", hue_order=order, marker="o",
                     errorbar=("pi", 100), ax=zoom, legend=False)
        sns.scatterplot(copy, x="value", y="final_test_acc", hue="method", hue_order=order, s=16, alpha=0.6,
                        legend=False, ax=zoom)
        zoom.set_title("with the copy only (zoomed; dots: seeds)", fontsize=9)
        if NOISE_KINDS[kind][2] == 32:
            bits_axis(zoom, sub.value)
        else:  # κ spans 0 and decades: linear near 0, log beyond; a tick at every value run
            vals = sorted(set(sub.value))
            zoom.set_xscale("symlog", linthresh=min(v for v in vals if v > 0))
            zoom.set_xticks(vals, [f"{v:g}" for v in vals])
            zoom.minorticks_off()
        zoom.set_xlabel(kind)
        for ax in (top, zoom):
            ax.set_ylabel("final test accuracy (%)" if col == 0 else "")
    if kinds and axes[0][0].get_legend() is not None:
        h, lab = axes[0][0].get_legend_handles_labels()
        axes[0][0].get_legend().remove()
        fig.legend(h, lab, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    seeds = sorted(set(mc.seed))
    fig.suptitle(f"FTP vs BP under write noise and few conductance levels, with and without a float master copy, "
                 f"{dataset}\n(master copy: seeds {seeds}) line: mean over seeds; band: min–max; × = diverged"
                 + gamma_line + (f"\n{budget(P)}" if P else ""), fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- update alignment (§5 item 5)
def alignment_jobs(P: dict) -> list[dict]:
    """ftp.md §4.5 / §5 item 5: the angle between each method's update and the true BP gradient, per
    layer, over training (same batch, same dropout masks, pre-update weights; ``align_every`` steps,
    averaged per epoch). The FC net and PEPITA's training, as in the accuracy table."""
    jobs = []
    for seed in P["seeds"]:
        for m in P["methods"]:
            j = _fc_job(P, P["dataset"], m, seed, gamma=P["gamma"] if m == "FTP" else None)
            j["config"]["align_every"] = P["align_every"]
            jobs.append(j)
    return jobs


def run_alignment(P: dict, results: str = "results"):
    """Per-epoch, per-layer angle (degrees) between update and BP gradient, one row per (run, epoch, layer)."""
    done = run_all(alignment_jobs(P), store_for("ftp_alignment", results), P, desc="ftp_alignment")
    hist = history_frame(done)
    hist = hist[(hist.epoch >= 1) & hist.align_cos.map(lambda c: isinstance(c, list))]
    rows = []
    for _, r in hist.iterrows():
        n = len(r.align_cos)
        for i, c in enumerate(r.align_cos):
            rows.append({"method": r.method, "seed": r.seed, "epoch": r.epoch, "status": r.status,
                         "layer": f"W{i + 1}" + (" (output)" if i == n - 1 else ""),
                         "cos": c, "angle": float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))})
    return pd.DataFrame(rows), final_frame(done)


def alignment_metrics(angles: pd.DataFrame) -> dict:
    """Mean angle per method, layer and epoch; ftp.md §5 item 5's claim: FTP's hidden-layer updates stay
    within 90° of the BP gradient (a descent direction) at every epoch — for each FTP reading. Every
    measurement counts, a diverged run's too, and a reading with a diverged run fails: its updates did not
    "stay" descent directions over training (the per-epoch angle averages the finite measurements before
    the NaN, which can look fine)."""
    ok = angles
    out = {"angle_deg": {m: {layer: {str(int(e)): float(a) for e, a in g.groupby("epoch").angle.mean().items()}
                             for layer, g in d.groupby("layer")} for m, d in ok.groupby("method")},
           "diverged": {m: int((d.groupby("seed").status.first() == "diverged").sum())
                        for m, d in angles.groupby("method")}}
    for m, key in READINGS:
        ftp = ok[(ok.method == m) & ~ok.layer.str.endswith("(output)")]
        if len(ftp):
            per_epoch = ftp.groupby(["layer", "epoch"]).angle.agg(lambda a: a.mean(skipna=False))
            out[f"{key}_hidden_max_angle_deg"] = float(per_epoch.max())
            diverged = bool((ok[ok.method == m].status == "diverged").any())
            out[f"{key}_hidden_within_90_every_epoch"] = bool((per_epoch < 90.0).all() and not diverged)
    return out


def plot_alignment(angles: pd.DataFrame, P: dict | None = None):
    d = angles
    g = sns.relplot(d, x="epoch", y="angle", hue="method", col="layer", kind="line", marker="o",
                    errorbar=("pi", 100), height=3.0, aspect=1.1)
    for ax in g.axes.flat:
        ax.axhline(90, color="grey", lw=0.8, ls=":")
    g.set_axis_labels("epoch", "angle to −∇ BP (degrees)")
    g.figure.suptitle("Update vs BP gradient (same batch, masks, pre-update weights); 90° = no descent"
                      + (f"\n{budget(P)}" if P else ""), y=1.03 if P is None else 1.08)
    return g.figure
