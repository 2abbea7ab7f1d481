"""F³ (Flügel et al., ICONIP 2024): sweep definitions, metrics and plots for Figs. 2a, 2b, 3a, 3b.

Sections of ``params.yaml``: ``f3_regression`` (SGEMM + Wine, Fig. 2a regression panels and the
gap-closed headline), ``f3_mnist`` (Fig. 2a MNIST panel and Fig. 2b with PEPITA) and ``f3_variants``
(Figs. 3a and 3b). Settings follow f3.md §3; its open questions are resolved as §6 recommends.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..rules import rule_config
from ..rules.f3 import F3
from .common import agg, budget, final_frame, fixed_jitter, gap_closed, history_frame, run_all, store_for

# Numbers printed in the paper (f3.md §4), drawn as references.
REPORTED = {
    "sgemm": {"DRTP": 0.364, "F3": 0.014, "BP": 0.003},
    "wine_quality": {"DRTP": 0.641, "F3": 0.585, "BP": 0.583},
    "mnist_error": {"DRTP": 4.3, "F3-Error": 2.7, "BP": 1.44},
    "gap_closed": {"sgemm": 96.9, "wine_quality": 96.3, "mnist": 56.0},
}
PALETTE = {"BP": "black", "LLO": "tab:gray", "DFA": "tab:blue", "DRTP": "tab:red", "F3-Loss": "tab:olive",
           "F3-Error": "tab:green", "PEPITA": "tab:purple"}


def _lr(table: dict, label: str) -> float:
    if label in table:
        return table[label]
    if label.startswith("F3") and "F3" in table:
        return table["F3"]
    raise KeyError(f"no learning rate for {label!r} in {table}")


def mlp_job(dataset: str, label: str, seed: int, S: dict, loss: str, extra_rule: dict | None = None,
            normalize: str = "standard") -> dict:
    cfg = {
        "dataset": {"name": dataset, "normalize": normalize, "n_train": S.get("n_train"), "n_test": S.get("n_test")},
        "model": {"arch": "mlp", "width": S.get("width", 500), "depth": S.get("depth", 1), "act": "tanh",
                  "loss": loss},
        "rule": rule_config(label, **(extra_rule or {})),
        "optim": {"name": "adam", "lr": float(_lr(S["lr"], label))},
        "epochs": S["epochs"], "batch_size": S["batch_size"], "seed": seed,
    }
    return {"dataset": dataset, "algorithm": label, "seed": seed, "config": cfg}


def pepita_job(S: dict, Pp: dict, seed: int) -> dict:
    """PEPITA with its public MNIST defaults (f3.md §6 item 4: 784–1024–10 ReLU, no bias, inputs in [0, 1])."""
    cfg = {
        "dataset": {"name": "mnist", "normalize": "unit", "n_train": S.get("n_train"), "n_test": S.get("n_test")},
        "model": {"arch": "mlp", "width": Pp["width"], "depth": 1, "act": "relu", "loss": "ce", "bias": False,
                  "init": "he_uniform"},
        "rule": {"name": "pepita", "f_scale": Pp["f_scale"], "keep": Pp["keep"]},
        "optim": {"name": "sgd", "lr": Pp["lr"], "momentum": Pp["momentum"], "milestones": Pp["milestones"],
                  "gamma": 0.1},
        "epochs": Pp["epochs"], "batch_size": Pp["batch_size"], "seed": seed,
    }
    return {"dataset": "mnist", "algorithm": "PEPITA", "seed": seed, "config": cfg}


# ----------------------------------------------------------------------------------------- sweeps
def regression_jobs(P: dict) -> list[dict]:
    jobs = []
    for ds, key in (("sgemm", "sgemm"), ("wine_quality", "wine")):
        S = P[key]
        for seed in S["seeds"]:
            for label in P["algorithms"]:
                jobs.append(mlp_job(ds, label, seed, S, "mse"))
    return jobs


def mnist_jobs(P: dict) -> list[dict]:
    jobs = [mlp_job("mnist", label, seed, P, "bce") for seed in P["seeds"] for label in P["algorithms"]]
    if P["pepita"]["include"]:
        jobs += [pepita_job(P, P["pepita"], seed) for seed in P["seeds"]]
    return jobs


def variant_jobs(P: dict) -> list[dict]:
    jobs = []
    for seed in P["seeds"]:
        for ei in P["error_infos"]:
            j = mlp_job("mnist", "F3-Error", seed, P, "bce", {"error_info": ei})
            jobs.append({**j, "algorithm": VARIANT_LABEL[ei], "panel": "3a", "variant": ei})
        for fi in P["feedback_inits"]:
            # the default init is left out of the rule config, so that run is Fig. 3a's (and Fig. 2's) run
            extra = {"error_info": P["init_error_info"]} | ({} if fi == F3.PARAMS["feedback_init"] else {"feedback_init": fi})
            j = mlp_job("mnist", "F3-Error", seed, P, "bce", extra)
            jobs.append({**j, "algorithm": INIT_LABEL[fi], "panel": "3b", "variant": fi})
    return jobs


def depth_jobs(P: dict) -> list[dict]:
    """Fig. 4a (f3.md §3.6 E4, §6 item 5): SGEMM, width 500, d hidden layers; lr by depth group (§3.5)."""
    jobs = []
    for seed in P["seeds"]:
        for d in P["depths"]:
            group = "d1" if d == 1 else ("d2" if d == 2 else "d10")
            S = {**P, "depth": d, "lr": P["lr"][group]}
            for label in P["algorithms"]:
                j = mlp_job("sgemm", label, seed, S, "mse")
                jobs.append({**j, "depth": d})
    return jobs


def depth_metrics(fin: pd.DataFrame) -> dict:
    ok = fin[fin.status == "ok"]
    m = {"test_mse": {a: {str(d): float(g[g.depth == d].final_test_loss.mean()) for d in sorted(set(g.depth))}
                      for a, g in ok.groupby("algorithm")},
         "diverged": {a: {str(d): int((g[g.depth == d].status == "diverged").sum()) for d in sorted(set(g.depth))}
                      for a, g in fin.groupby("algorithm")}}
    dfa = m["test_mse"].get("DFA", {})
    if len(dfa) > 1:
        # "DFA flat vs depth" (f3.md §4), operationalised: DFA's worst depth within 2× of its best depth
        m["dfa_max_over_min"] = max(dfa.values()) / min(dfa.values())
        m["dfa_flat_with_depth"] = bool(m["dfa_max_over_min"] <= 2.0)
    return m


def plot_depth(fin: pd.DataFrame):
    d = fin.copy()
    d.loc[d.status != "ok", "final_test_loss"] = float("nan")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(d, x="depth", y="final_test_loss", hue="algorithm", palette=PALETTE, marker="o",
                 errorbar=("pi", 100), ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(d.depth)), [str(x) for x in sorted(set(d.depth))])
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("final test MSE (SGEMM, standardised)")
    ax.set_title("Fig. 4a: depth scaling (diverged runs omitted)")
    fig.tight_layout()
    return fig


VARIANT_LABEL = {"delayed_error": "Error", "delayed_loss": "Loss", "delayed_error_one_hot": "Error+OneHot",
                 "delayed_loss_one_hot": "Loss+OneHot", "delayed_error_softmax": "Error+Softmax",
                 "delayed_loss_softmax": "Loss+Softmax"}
INIT_LABEL = {"kaiming_uniform": "Kaiming", "trinomial": "Trinomial", "binomial": "Binomial", "pm_identity": "±I"}

def vit_jobs(P: dict) -> list[dict]:
    """Fig. 4b (f3.md §2.9, §3.6 E5): the simplified ViT on MNIST; each Transformer block is one "layer" of
    the direct-feedback rules (trinomial feedback); F³ = delayed_error_softmax (y* − softmax(logits), the
    authors' choice here); Adam 3e-3 for all, batch 100; the figure is the best test accuracy in 100 epochs."""
    jobs = []
    for seed in P["seeds"]:
        for label in P["algorithms"]:
            extra = {"feedback_init": P["feedback_init"]} if label != "BP" else {}
            if label.startswith("F3"):
                extra["error_info"] = P["f3_error_info"]
            rule = rule_config("F3-Error" if label.startswith("F3") else label, **extra)
            cfg = {"dataset": {"name": "mnist", "normalize": "standard", "n_train": P.get("n_train"),
                               "n_test": P.get("n_test")},
                   "model": {"arch": "vit", "loss": "ce"}, "rule": rule,
                   "optim": {"name": "adam", "lr": float(P["lr"])},
                   "epochs": P["epochs"], "batch_size": P["batch_size"], "seed": seed}
            jobs.append({"dataset": "mnist", "algorithm": label, "seed": seed, "config": cfg})
    return jobs


VIT_PAPER_SCALE = {"epochs": 100, "n_train": 60000}  # f3.md §3.6 E5: full MNIST training set, 100 epochs


def vit_scale(P: dict) -> dict:
    """The scale a Fig. 4b sweep ran at, and whether it is below the paper's (recorded in the metrics)."""
    s = {"epochs": int(P["epochs"]), "n_train": int(P.get("n_train") or VIT_PAPER_SCALE["n_train"])}
    return {**s, "reduced": any(s[k] < VIT_PAPER_SCALE[k] for k in s)}


def vit_metrics(fin: pd.DataFrame, P: dict | None = None) -> dict:
    """Best test accuracy over the epochs (the paper's Fig. 4b measure) and final, per algorithm; the §4
    qualitative claim as checks: DRTP above chance (10 %) but below F³, DFA and BP."""
    ok = fin[fin.status == "ok"].assign(best_test_acc=lambda f: 100.0 - f.best_test_error,
                                        final_test_acc=lambda f: 100.0 - f.final_test_error)
    m = {"best_test_acc": {a: agg(g.best_test_acc) for a, g in ok.groupby("algorithm")},
         "final_test_acc": {a: agg(g.final_test_acc) for a, g in ok.groupby("algorithm")},
         "diverged_runs": int((fin.status != "ok").sum())}
    b = {a: v["mean"] for a, v in m["best_test_acc"].items()}
    if {"BP", "F3"} <= set(b):
        m["f3_minus_bp_best_acc"] = b["F3"] - b["BP"]
    if {"DRTP", "F3", "DFA", "BP"} <= set(b):
        m["drtp_above_chance_below_others"] = bool(10.0 < b["DRTP"] < min(b["F3"], b["DFA"], b["BP"]))
    if P is not None:
        m["scale"] = vit_scale(P)
    return m


def plot_vit(fin: pd.DataFrame, P: dict | None = None):
    ok = fin[fin.status == "ok"].assign(best_test_acc=lambda f: 100.0 - f.best_test_error)
    fig, ax = plt.subplots(figsize=(6, 4))
    order = [a for a in ("BP", "DFA", "DRTP", "F3") if a in set(ok.algorithm)]
    sns.barplot(ok, x="algorithm", y="best_test_acc", hue="algorithm", order=order, hue_order=order,
                errorbar="sd", ax=ax, legend=False,
                palette={a: PALETTE.get(a, PALETTE["F3-Error"]) for a in order})
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axhline(10, color="grey", ls=":", lw=1, label="chance")
    ax.set_ylim(0, 112)  # room for the legend above the bars' labels
    ax.set_ylabel("best test accuracy in the run (%)")
    ax.set_xlabel("")
    spec = f"{VIT_PAPER_SCALE['epochs']} epochs on all {VIT_PAPER_SCALE['n_train']:,}"
    ax.set_title("F³ Fig. 4b: simplified ViT on MNIST (blocks as layers)" + (f"\n{budget(P, spec)}" if P else ""),
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


JOBS = {"f3_regression": regression_jobs, "f3_mnist": mnist_jobs, "f3_variants": variant_jobs,
        "f3_depth": depth_jobs, "f3_vit": vit_jobs}


def run(section: str, P: dict, results: str = "results") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or load from the run cache) every run of a section; (per-epoch frame, final frame).
    A subset is ``python -m repro sweep <section> --only COLUMN=VALUE`` (``figures.select_jobs``)."""
    done = run_all(JOBS[section](P), store_for(section, results), P, desc=section)
    return history_frame(done), final_frame(done)


# ---------------------------------------------------------------------------------------- metrics
def _final_by(fin: pd.DataFrame, col: str, ds: str | None = None) -> dict:
    f = fin if ds is None else fin[fin.dataset == ds]
    ok = f[f.status == "ok"]
    out = {a: agg(g[col]) for a, g in ok.groupby("algorithm")}
    for a, g in f.groupby("algorithm"):
        out.setdefault(a, {"n": 0})["diverged"] = int((g.status == "diverged").sum())
    return out


def regression_metrics(fin: pd.DataFrame) -> dict:
    m = {}
    for ds in ("sgemm", "wine_quality"):
        per = _final_by(fin, "final_test_loss", ds)
        m[ds] = {"test_mse": per, "best_test_mse": _final_by(fin, "best_test_loss", ds)}
        bp, drtp = per.get("BP", {}).get("mean"), per.get("DRTP", {}).get("mean")
        if bp is not None and drtp is not None:
            m[ds]["gap_closed"] = {a: gap_closed(drtp, per[a]["mean"], bp) for a in per if a.startswith("F3") and "mean" in per[a]}
            # spread of the gap over seeds (pairs runs of the same seed)
            piv = fin[fin.dataset == ds].pivot_table(index="seed", columns="algorithm", values="final_test_loss")
            for a in m[ds]["gap_closed"]:
                if {"BP", "DRTP", a} <= set(piv.columns):
                    g = gap_closed(piv["DRTP"], piv[a], piv["BP"]).dropna()
                    m[ds].setdefault("gap_closed_per_seed", {})[a] = agg(g)
        if "LLO" in per and "F3-Error" in per and "mean" in per["LLO"]:
            m[ds]["llo_worse_than_f3"] = bool(per["LLO"]["mean"] > per["F3-Error"]["mean"])
    return m


def mnist_metrics(fin: pd.DataFrame) -> dict:
    per = _final_by(fin, "final_test_error")
    m = {"test_error": per, "best_test_error": _final_by(fin, "best_test_error"),
         "test_loss": _final_by(fin.query("algorithm != 'PEPITA'"), "final_test_loss")}
    if all(a in per and "mean" in per[a] for a in ("BP", "DRTP", "F3-Error")):
        m["gap_closed"] = {a: gap_closed(per["DRTP"]["mean"], per[a]["mean"], per["BP"]["mean"])
                           for a in per if a.startswith("F3") and "mean" in per[a]}
    if "LLO" in per and "F3-Error" in per and "mean" in per["LLO"]:
        m["llo_worse_than_f3"] = bool(per["LLO"]["mean"] > per["F3-Error"]["mean"])
    if all(a in per and "mean" in per[a] for a in ("DFA", "PEPITA", "F3-Error")):
        m["dfa_and_pepita_better_than_f3"] = bool(max(per["DFA"]["mean"], per["PEPITA"]["mean"]) < per["F3-Error"]["mean"])
    if "F3-Error" in per and "F3-Loss" in per and "mean" in per["F3-Loss"]:
        m["f3_error_better_than_loss"] = bool(per["F3-Error"]["mean"] < per["F3-Loss"]["mean"])
    return m


def variant_metrics(fin: pd.DataFrame) -> dict:
    loss = {p: _final_by(fin[fin.panel == p], "final_test_loss") for p in ("3a", "3b")}
    err = {p: _final_by(fin[fin.panel == p], "final_test_error") for p in ("3a", "3b")}
    m = {"fig3a_test_loss": loss["3a"], "fig3b_test_loss": loss["3b"], "fig3a_test_error": err["3a"],
         "fig3b_test_error": err["3b"]}
    b = loss["3b"]
    if all(k in b and "mean" in b[k] for k in INIT_LABEL.values()):
        k, t = b["Kaiming"], b["Trinomial"]
        # "trinomial ≈ Kaiming": their difference is within the larger seed std (or 5 % of the loss)
        tol = max(k["std"], t["std"], 0.05 * k["mean"])
        m["trinomial_close_to_kaiming"] = bool(abs(k["mean"] - t["mean"]) <= tol)
        m["binomial_and_pm_identity_worse"] = bool(min(b["Binomial"]["mean"], b["±I"]["mean"]) > max(k["mean"], t["mean"]) + tol)
    a = loss["3a"]
    if all(k in a and "mean" in a[k] for k in VARIANT_LABEL.values()):
        m["softmax_higher_loss"] = bool(min(a["Error+Softmax"]["mean"], a["Loss+Softmax"]["mean"]) >
                                        max(a["Error"]["mean"], a["Error+OneHot"]["mean"]))
    return m


# ------------------------------------------------------------------------------------------ plots
def plot_curves(hist: pd.DataFrame, metric: str = "test_loss", col: str = "dataset", logy: dict | None = None,
                hue: str = "algorithm", palette=None, title: str | None = None):
    cols = list(dict.fromkeys(hist[col]))
    fig, axes = plt.subplots(1, len(cols), figsize=(5.2 * len(cols), 3.8), squeeze=False)
    for ax, c in zip(axes[0], cols):
        d = hist[(hist[col] == c) & hist[metric].notna()]
        sns.lineplot(d, x="epoch", y=metric, hue=hue, errorbar=("pi", 100), ax=ax, palette=palette, linewidth=1.3)
        ax.set_title(str(c))
        if logy and logy.get(c):
            ax.set_yscale("log")
        else:  # the untrained epoch 0 would squash the curves: scale to the trained epochs
            v = d[d.epoch >= 1][metric]
            if len(v):
                lo, hi = float(v.min()), float(v.quantile(0.995))
                ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        ax.set_ylabel(metric.replace("_", " "))
        ax.legend(fontsize=7, title=None)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _paper_stars(ax, present: list[str], reported: dict, alias: dict | None = None) -> None:
    first = True
    for a, v in reported.items():
        a = (alias or {}).get(a, a)
        if a in present:
            ax.scatter([present.index(a)], [v], marker="*", s=160, c="gold", edgecolors="k", zorder=6,
                       label="paper" if first else None)
            first = False


def plot_gap(fin: pd.DataFrame, metrics: dict, order: list[str]):
    """Headline: final test MSE per algorithm (mean ± std over seeds, dots = seeds), our BP as a dashed
    line, the paper's values as gold stars, and the gap closed by each F³ variant in a box."""
    dss = [d for d in ("sgemm", "wine_quality") if d in set(fin.dataset)]
    fig, axes = plt.subplots(1, len(dss), figsize=(6.2 * len(dss), 5.2), squeeze=False)
    for ax, ds in zip(axes[0], dss):
        d = fin[(fin.dataset == ds) & (fin.status == "ok")]
        present = [a for a in order if a in set(d.algorithm)]
        with fixed_jitter():
            sns.stripplot(d, x="algorithm", y="final_test_loss", order=present, hue="algorithm", palette=PALETTE,
                          size=4, alpha=0.6, jitter=0.15, ax=ax, legend=False)
        sns.pointplot(d, x="algorithm", y="final_test_loss", order=present, errorbar="sd", linestyle="none",
                      color="k", markers="_", markersize=18, capsize=0.25, ax=ax)
        bp = metrics[ds]["test_mse"].get("BP", {}).get("mean")
        if bp is not None:
            ax.axhline(bp, ls="--", c="k", lw=1, label=f"BP (ours) {bp:.3g}")
        _paper_stars(ax, present, REPORTED[ds], {"F3": "F3-Error"})
        if ds == "sgemm":
            ax.set_yscale("log")
        gaps = metrics[ds].get("gap_closed", {})
        spread = metrics[ds].get("gap_closed_per_seed", {})
        lines = [f"gap closed (DRTP → BP), paper {REPORTED['gap_closed'][ds]} %"]
        for a, g in gaps.items():
            sd = spread.get(a, {})
            lines.append(f"{a}: {g:.1f} %" + (f" (per seed {sd['mean']:.1f} ± {sd['std']:.1f})" if sd.get("n", 0) > 1 else ""))
        ax.text(0.5, -0.1, "\n".join(lines), transform=ax.transAxes, fontsize=8.5, va="top", ha="center",
                bbox={"boxstyle": "round", "fc": "whitesmoke", "ec": "0.7"})
        n = int(d.groupby("algorithm").size().max()) if len(d) else 0
        ax.set_title(f"{ds}: final test MSE (standardised), {n} seed(s)")
        ax.set_ylabel("test MSE")
        ax.set_xlabel("")
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_mnist_error(fin: pd.DataFrame, order: list[str]):
    d = fin[fin.status == "ok"]
    present = [a for a in order if a in set(d.algorithm)]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    with fixed_jitter():
        sns.stripplot(d, x="algorithm", y="final_test_error", order=present, hue="algorithm", palette=PALETTE,
                      size=4, alpha=0.6, jitter=0.15, ax=ax, legend=False)
    sns.pointplot(d, x="algorithm", y="final_test_error", order=present, errorbar="sd", linestyle="none",
                  color="k", markers="_", markersize=18, capsize=0.25, ax=ax)
    _paper_stars(ax, present, REPORTED["mnist_error"])
    ax.set_yscale("log")
    ax.set_ylabel("final top-1 test error (%)  [paper's BP star: derived]")
    ax.set_xlabel("")
    ax.set_title("MNIST, MLP 784-500-10 (PEPITA: 784-1024-10 ReLU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
