"""FOTON (arXiv 2512.20668): depth scaling — test accuracy vs number of weight layers for FOTON at
several orthogonalisation / 𝔽-refresh frequencies, with BP and PEPITA for context (foton.md §3.2 E2, §5 F2).

Every setting not in the sources is a reconstruction (foton.md §6): width 256, depths in weight layers,
ReLU, orthogonal init, no bias, dropout 0.1 shared by both passes, plain SGD; the frequencies swept.
"""
from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..models import ConfigError
from .common import (budget, check_known, final_frame, history_frame, mark_diverged, measured, run_all,
                     run_for_dataset, seed_filter, store_for)

# foton.md §4: numbers reported for CIFAR-100 (the paper's dataset for this figure)
REPORTED = {"cifar100": {50: 12.6}}


def net(P: dict, dataset: str, depth_layers: int, rule: dict, optim: dict, seed: int) -> dict:
    return {
        "dataset": {"name": dataset, "normalize": "standard", "n_train": P.get("n_train"), "n_test": P.get("n_test")},
        "model": {"arch": "mlp", "width": P["width"], "depth": depth_layers - 1, "act": P["act"], "loss": "ce",
                  "bias": False, "init": "orthogonal"},
        "rule": rule, "optim": optim, "epochs": P["epochs"], "batch_size": P["batch_size"], "seed": seed,
    }


def depth_jobs(P: dict, dataset: str) -> list[dict]:
    jobs = []
    sgd = lambda lr: {"name": "sgd", "lr": lr, "momentum": 0.0}  # noqa: E731
    for seed in P["seeds"]:
        for L in P["depths"]:
            col = {"dataset": dataset, "layers": L, "seed": seed, "part": "depth", "act": P["act"]}
            for ortho, ff in P["frequencies"]:
                rule = {"name": "foton", "ortho_every": ortho, "ff_every": ff, "keep": P["keep"]}
                jobs.append({**col, "method": f"FOTON o={ortho} ff={ff}", "lr": P["lr"]["FOTON"],
                             "config": net(P, dataset, L, rule, sgd(P["lr"]["FOTON"]), seed)})
            if P["include_bp"]:
                jobs.append({**col, "method": "BP", "lr": P["lr"]["BP"],
                             "config": net(P, dataset, L, {"name": "bp"}, sgd(P["lr"]["BP"]), seed)})
            if P["include_pepita"]:
                rule = {"name": "pepita", "keep": P["keep"]}
                opt = {"name": "sgd", "lr": P["lr"]["PEPITA"], "momentum": 0.9}
                jobs.append({**col, "method": "PEPITA", "lr": P["lr"]["PEPITA"],
                             "config": net(P, dataset, L, rule, opt, seed)})
    for j in jobs:
        j["base"] = j["method"]  # the figure's method a grid or control run repeats (its own label for these)
    return jobs + _depth_lr_jobs(P, jobs) + _depth_act_jobs(P, jobs)


def _depth_lr_jobs(P: dict, figure: list[dict]) -> list[dict]:
    """``lr_sweep`` (optional, ``{methods, lrs, seeds, depths}`` or a list of them): foton.md §6 item 3 — the
    learning rate per depth is unknown (the code's 0.5 is its 3-layer net's) and BP takes the same grid — so
    each listed method of the figure (a label such as ``FOTON o=1 ff=1`` or ``BP``) trains again at each of
    the grid's depths (default: all) on each of ``lrs``, its config otherwise the figure's; the figure's own
    run is the grid point it shares, and a point two grids share trains once. Part ``lr_sweep``."""
    jobs, seen = [], set()
    for S in lr_grids(P):
        seeds, depths = _part_selection(P, S, "lr_sweep", figure)
        for j in figure:
            if j["method"] not in S["methods"] or j["seed"] not in seeds or j["layers"] not in depths:
                continue
            for lr in dict.fromkeys(float(v) for v in S["lrs"]):
                point = (j["method"], j["seed"], j["layers"], lr)
                if lr == float(j["lr"]) or point in seen:
                    continue  # the figure's own run, or a point an earlier grid has
                seen.add(point)
                cfg = copy.deepcopy(j["config"])
                cfg["optim"]["lr"] = lr
                jobs.append({**j, "lr": lr, "part": "lr_sweep", "config": cfg})
    return jobs


def _part_selection(P: dict, S: dict, part: str, figure: list[dict]) -> tuple[list, list]:
    """An optional part's ``methods`` (labels of the figure's), and its ``seeds`` and ``depths`` (default: the
    figure's; each a subset of the figure's), returned; anything else is one line naming the key."""
    labels = list(dict.fromkeys(j["method"] for j in figure))
    bad = [m for m in S["methods"] if m not in labels]
    if bad:
        raise ConfigError(f"foton_depth.{part}.methods: {bad} are not methods of the depth figure; allowed: {labels}")
    out = []
    for k in ("seeds", "depths"):
        v = list(S.get(k) or P[k])
        extra = sorted(set(v) - set(P[k]))
        if extra:
            raise ConfigError(f"foton_depth.{part}.{k}: {extra} not in foton_depth.{k} {list(P[k])}")
        out.append(v)
    return out[0], out[1]


def _depth_act_jobs(P: dict, figure: list[dict]) -> list[dict]:
    """``act_controls`` (optional, ``{acts, methods, seeds, depths}``): foton.md §6 item 6 — the deep
    experiments' activation is unknown (the code's default ReLU; E3's may be linear), so the listed methods
    of the figure train again with each of ``acts`` (e.g. tanh, identity), everything else the figure's.
    Part ``act``, method labels ``<method> (<act>)``."""
    from ..models import ACTIVATIONS
    S = P.get("act_controls")
    if not S:
        return []
    check_known("foton_depth.act_controls.acts", S["acts"], [a for a in ACTIVATIONS if a != P["act"]])
    seeds, depths = _part_selection(P, S, "act_controls", figure)
    jobs = []
    for a in S["acts"]:
        for j in figure:
            if j["method"] in S["methods"] and j["seed"] in seeds and j["layers"] in depths:
                cfg = copy.deepcopy(j["config"])
                cfg["model"]["act"] = a
                jobs.append({**j, "method": f"{j['method']} ({a})", "act": a, "part": "act", "config": cfg})
    return jobs


def part_frame(fin: pd.DataFrame, part: str) -> pd.DataFrame:
    """An optional part's runs (``lr_sweep`` or ``act``) with the figure's runs they repeat (same ``base``
    method, seed and depth: the figure's lr and activation), diverged ones at their measured accuracy; empty
    when the part did not run."""
    if "part" not in fin or not (fin.part == part).any():
        return fin.iloc[0:0]
    own = fin.part == part
    keys = set(zip(fin.base[own], fin.seed[own], fin.layers[own]))
    fig = (fin.part == "depth") & pd.Series([k in keys for k in zip(fin.base, fin.seed, fin.layers)], index=fin.index)
    return measured(fin[own | fig])


def plot_depth_act(fin: pd.DataFrame, dataset: str, P: dict):
    """The activation controls: final test accuracy against depth, a line per activation, a panel per method."""
    d = part_frame(fin, "act").assign(activation=lambda x: x.act)
    return _panels_by_method(d, dataset, f"the activation (the figure's: {P['act']}; × = diverged; dotted: chance)",
                             f"{_epochs(P)}, {{n}}, the figure's learning rates (spec: 100 epochs, ≥ 3 seeds)",
                             lambda m, g: m, hue="activation", style="activation", markers=True, dashes=False)


def _epochs(P: dict) -> str:
    return f"{P['epochs']} epoch{'s' * (P['epochs'] != 1)}"


def _panels_by_method(d: pd.DataFrame, dataset: str, what: str, budget_line: str | None, panel_title,
                      legend: dict | None = None, **line) -> plt.Figure:
    """One panel per figure method (``base``): final test accuracy against depth, lines as ``line`` (seaborn's
    lineplot arguments), diverged runs as ×, chance dotted; ``budget_line`` may name ``{n}`` (the seeds)."""
    ms = list(dict.fromkeys(d.base))
    fig, axes = plt.subplots(1, len(ms), figsize=(5.2 * len(ms), 4.3), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], ms):
        g = d[d.base == m]
        sns.lineplot(g, x="layers", y="final_test_acc", errorbar=("pi", 100), ax=ax, **line)
        mark_diverged(ax, g, "layers")
        ax.set_title(panel_title(m, g), fontsize=10)
        _depth_axis(ax, d.layers)
        ax.axhline(10.0, color="0.6", lw=0.8, ls=":")
        ax.legend(fontsize=7, **(legend or {}))
    axes[0][0].set_ylabel("final test accuracy (%)")
    n = d.seed.nunique()
    seeds = f"{n} seed{'s' * (n != 1)}"
    line = f"\n{budget_line.format(n=seeds)}" if budget_line else ""
    fig.suptitle(f"FOTON depth scaling, {dataset}: {what}{line}", fontsize=10)
    fig.tight_layout()
    return fig


def depth_frame(fin: pd.DataFrame) -> pd.DataFrame:
    """The depth figure's own runs (without the ``lr_sweep`` grid's and the ``act_controls``')."""
    return fin[fin.part == "depth"] if "part" in fin else fin


def run(P: dict, dataset: str, results: str = "results") -> tuple[pd.DataFrame | None, pd.DataFrame | None, str | None]:
    """(history, finals, None), or (None, None, reason) when the dataset cannot be obtained here."""
    return _with_acc(*run_for_dataset(depth_jobs(P, dataset), dataset, "foton_depth", P, results))


def _with_acc(hist, fin, reason):
    """Accuracy columns (100 − error) beside every error column; passes a skip reason through."""
    if reason is not None:
        return None, None, reason
    for f in (hist, fin):
        for col in [c for c in f.columns if c.endswith("_error")]:
            f[col.replace("_error", "_acc")] = 100.0 - f[col]
    return hist, fin, None


def metrics(fin: pd.DataFrame) -> dict:
    grid, ctl, fin = part_frame(fin, "lr_sweep"), part_frame(fin, "act"), depth_frame(fin)
    ok = fin[fin.status == "ok"]
    out = {"final_test_acc": {}, "best_test_acc": {}, "diverged": {}}
    for (m, L), g in ok.groupby(["method", "layers"]):
        out["final_test_acc"].setdefault(m, {})[str(L)] = float(g.final_test_acc.mean())
        out["best_test_acc"].setdefault(m, {})[str(L)] = float(g.best_test_acc.mean())
    for (m, L), g in fin.groupby(["method", "layers"]):
        out["diverged"].setdefault(m, {})[str(L)] = int((g.status == "diverged").sum())
    out.update(frequency_check(fin))
    if len(grid):  # per method, depth and lr: final test accuracy (diverged runs at their measured value)
        out["lr_sweep"] = {m: {str(int(L)): {f"{lr:g}": {"final_test_acc": float(g.final_test_acc.mean()),
                                                           "diverged": int((g.status != "ok").sum()),
                                                           "n_seeds": int(g.seed.nunique())}
                                              for lr, g in gl.groupby("lr")}
                               for L, gl in gm.groupby("layers")} for m, gm in grid.groupby("base")}
        # per method and depth, the lr with the highest mean final accuracy (chosen on the test set)
        out["lr_sweep_best"] = {}
        for m, byL in out["lr_sweep"].items():
            for L, per in byL.items():
                lr, v = max(per.items(), key=lambda kv: kv[1]["final_test_acc"])
                out["lr_sweep_best"].setdefault(m, {})[L] = {"final_test_acc": v["final_test_acc"], "lr": float(lr)}
    if len(ctl):  # per method, activation and depth: final test accuracy (the figure's runs as its act)
        out["act_controls"] = {m: {a: {str(int(L)): float(gl.final_test_acc.mean()) for L, gl in ga.groupby("layers")}
                                   for a, ga in gm.groupby("act")}
                               for m, gm in ctl.groupby("base")}
    return out


def plot_depth_lr(fin: pd.DataFrame, dataset: str, P: dict | None = None):
    """The lr grid: final test accuracy against depth, one line per lr, one panel per method."""
    d = part_frame(fin, "lr_sweep").assign(lr_label=lambda x: x.lr.map(lambda v: f"{v:g}"))
    lrs = sorted(set(d.lr))
    pal = dict(zip([f"{v:g}" for v in lrs], sns.color_palette("viridis", len(lrs))))

    def title(m, g):  # the figure's own rate for this method
        own = g[g.part == "depth"]
        return m + (f" (figure's lr {float(own.lr.iloc[0]):g})" if len(own) else "")
    return _panels_by_method(d, dataset, "learning rate per depth (× = diverged; dotted: chance)",
                             f"{_epochs(P)}, {{n}} (spec: 100 epochs, ≥ 3 seeds)" if P else None, title,
                             legend={"title": "lr", "title_fontsize": 8}, hue="lr_label", hue_order=list(pal),
                             palette=pal, marker="o")


def init_signal(P: dict, dataset: str, n: int = 1024) -> dict:
    """How much of the input reaches the output at initialisation, per depth: the norm of the first hidden
    layer's, the last hidden layer's and the logits' batch over the input batch's (Frobenius), on the first
    ``n`` training images, for the figure's model as its runs start it (``train.build``: same seed, orthogonal
    init, no biases; no dropout). With orthonormal weights a layer cannot amplify (‖W h‖ = ‖h‖) and ReLU drops
    the negative part, so the signal shrinks with depth; FOTON keeps its weights orthogonal, so it can only
    learn to lose less (pre-activations ReLU keeps), and BP starts from the same init. No training."""
    import torch

    from ..train import build, load_data, normalize_config
    jobs = {}
    for j in depth_frame_jobs(P, dataset):
        jobs.setdefault(j["layers"], j)
    out, data = {}, None
    for L, j in sorted(jobs.items()):
        cfg = normalize_config(j["config"])
        data = data or load_data(cfg, torch.device("cpu"))
        model, _ = build(cfg, torch.device("cpu"), data)
        x = data.x_train[:n]
        with torch.no_grad():
            _, hs = model.forward_all(x)
        out[str(int(L))] = {"first_hidden_norm_ratio": float(hs[1].norm() / x.norm()),
                            "hidden_norm_ratio": float(hs[-2].norm() / x.norm()),
                            "logit_norm_ratio": float(hs[-1].norm() / x.norm())}
    return out


def depth_frame_jobs(P: dict, dataset: str) -> list[dict]:
    """The depth figure's own jobs of seed ``seeds[0]`` (no lr grid or activation control)."""
    return [j for j in depth_jobs({**P, "lr_sweep": None, "act_controls": None}, dataset)
            if j["seed"] == P["seeds"][0]]


FREQ_MARGIN = 1.0  # points; our allowance for seed noise, fixed before any depth run (claims.yaml)


def frequency_check(fin: pd.DataFrame) -> dict:
    """Issue #3's qualitative claim "more frequent orthogonalisation / 𝔽 refresh does not hurt accuracy at
    depth": at every depth, FOTON with the most frequent setting (smallest ortho_every, 𝔽 refreshed most
    often; 0 = never counts as least often) is within ``FREQ_MARGIN`` points of, or above, every less
    frequent setting. A diverged run counts at chance (10 %) — divergence is a hurt. (Every depth, not only
    the deepest: after a short run every setting can sit at chance at 50 layers, which would make a
    deepest-only check vacuous.)"""
    f = fin[fin.method.str.startswith("FOTON o=")].copy()
    if f.empty:
        return {}
    f["acc"] = np.where(f.status == "ok", f.final_test_acc, 10.0)

    def rarity(m):  # "FOTON o=1 ff=0" → (1, inf): sort by how often each is done
        o, ff = (int(t.split("=")[1]) for t in m.split()[1:3])
        return (o, float("inf") if ff == 0 else ff)

    per_depth, ok_all = {}, True
    for L, g in f.groupby("layers"):
        d = g.groupby("method").acc.mean()
        ms = sorted(d.index, key=rarity)
        if len(ms) < 2:
            continue
        ok = bool(all(d[ms[0]] >= d[m] - FREQ_MARGIN for m in ms[1:]))
        per_depth[str(int(L))] = {"most_frequent": ms[0], "acc": {m: float(d[m]) for m in ms}, "holds": ok}
        ok_all &= ok
    if not per_depth:
        return {}
    return {"frequency_check": {"margin": FREQ_MARGIN, "by_depth": per_depth},
            "frequent_not_worse_at_depth": bool(ok_all)}


def _depth_axis(ax, layers) -> None:
    """A depth x-axis: log scale, a tick at each depth run, labelled in weight layers."""
    from matplotlib.ticker import NullFormatter
    Ls = sorted({int(L) for L in layers})
    ax.set_xscale("log")
    ax.set_xticks(Ls, [str(L) for L in Ls])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("weight layers")


def plot_depth(fin: pd.DataFrame, dataset: str, P: dict | None = None, signal: dict | None = None):
    """Final test accuracy vs depth; with ``signal`` (:func:`init_signal`) a second panel: how much of the
    input reaches the last hidden layer and the logits at initialisation."""
    if signal:
        fig, (ax, sx) = plt.subplots(1, 2, figsize=(11.5, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
        Ls = sorted(int(L) for L in signal)
        for key, lab, mk in (("hidden_norm_ratio", "last hidden layer", "o"), ("logit_norm_ratio", "logits", "s")):
            sx.plot(Ls, [signal[str(L)][key] for L in Ls], marker=mk, label=lab)
        _depth_axis(sx, Ls)
        sx.set_yscale("log")
        sx.set_ylabel("‖h‖ / ‖x‖ at initialisation")
        sx.set_title("signal reaching the output at init\n(orthogonal weights, no biases)", fontsize=10)
        sx.legend(fontsize=7)
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
    d = measured(depth_frame(fin))  # diverged runs at their measured (chance-level) accuracy, drawn ×
    sns.lineplot(d, x="layers", y="final_test_acc", hue="method", style="method", markers=True, dashes=False,
                 errorbar=("pi", 100), ax=ax)
    mark_diverged(ax, d, "layers")
    for L, v in REPORTED.get(dataset, {}).items():
        ax.scatter([L], [v], marker="*", s=160, c="gold", edgecolors="k", zorder=5, label="paper (FOTON)")
    _depth_axis(ax, d.layers)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"FOTON depth scaling, {dataset} (× = diverged, at its measured accuracy)"
                 + (f"\n{budget(P)}" if P else ""), fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- gradient alignment
def alignment_jobs(P: dict) -> list[dict]:
    """foton.md §3.2 E3/E4: FOTON vs PEPITA vs PEPITA with orthogonal init; cosine with the BP gradient
    measured every ``align_every`` steps on the same batch, same masks, pre-update weights (§2.9 item 3)."""
    by_depth, seeds_at = _epochs_by_depth(P), _seeds_by_depth(P)
    jobs = []
    for seed in P["seeds"]:
        for act in P["acts"]:
            for L in P["depths"]:
                if seed not in seeds_at.get(int(L), P["seeds"]):
                    continue  # a costly depth on fewer seeds (``seeds_by_depth``)
                for method in P["methods"]:
                    if method == "FOTON":
                        rule, init, bias = {"name": "foton", "keep": P["keep"]}, "orthogonal", False
                        optim = {"name": "sgd", "lr": P["lr"]["FOTON"]}
                    else:
                        rule = {"name": "pepita", "keep": P["keep"]}
                        init = "orthogonal" if method == "PEPITA (orthogonal init)" else "he_uniform"
                        bias, optim = False, {"name": "sgd", "lr": P["lr"]["PEPITA"], "momentum": 0.9}
                    cfg = {"dataset": {"name": "mnist", "normalize": "standard", "n_train": P.get("n_train"),
                                       "n_test": P.get("n_test")},
                           "model": {"arch": "mlp", "width": P["width"], "depth": L - 1, "act": act, "loss": "ce",
                                     "bias": bias, "init": init},
                           "rule": rule, "optim": optim, "epochs": by_depth.get(int(L), P["epochs"]),
                           "batch_size": P["batch_size"], "seed": seed, "align_every": P["align_every"]}
                    jobs.append({"act": act, "layers": L, "method": method, "seed": seed, "config": cfg})
    return jobs


def run_alignment(P: dict, results: str = "results"):
    done = run_all(alignment_jobs(P), store_for("foton_alignment", results), P, desc="foton_alignment")
    hist = history_frame(done)
    hist = hist[hist.epoch >= 1].copy()
    hist["cos_hidden"] = hist["align_cos"].map(lambda c: float(np.nanmean(c[:-1])) if isinstance(c, list) else np.nan)
    return hist, final_frame(done)


def alignment_metrics(hist: pd.DataFrame) -> dict:
    # each run's last epoch (depths may train for different numbers of epochs: ``epochs_by_depth``)
    last = hist[hist.epoch == hist.groupby(["act", "layers", "method", "seed"]).epoch.transform("max")]
    m = {"final_cos_hidden": {}, "final_cos_hidden_sd": {},
         "n_seeds": {str(L): int(g.seed.nunique()) for L, g in last.groupby("layers")}}
    for (act, L, method), g in last.groupby(["act", "layers", "method"]):
        v = float(g.cos_hidden.mean())  # over the seeds measured (a diverged seed's NaN is left out)
        if np.isnan(v):  # a run that diverged before its first measurement
            m.setdefault("not_measured", []).append(f"{act} {L} {method}")
            continue
        m["final_cos_hidden"].setdefault(act, {}).setdefault(str(L), {})[method] = v
        if g.cos_hidden.count() > 1:  # sample sd over seeds
            m["final_cos_hidden_sd"].setdefault(act, {}).setdefault(str(L), {})[method] = float(g.cos_hidden.std())
    deep = str(max(hist.layers))
    checks = []
    for act, d in m["final_cos_hidden"].items():
        v = d.get(deep, {})
        if "FOTON" in v and len(v) > 1:
            checks.append(all(v["FOTON"] > x for k, x in v.items() if k != "FOTON"))
    if checks:
        m["foton_above_pepita_at_depth"] = bool(all(checks))
        m["deepest"] = int(deep)
    return m


def plot_alignment(hist: pd.DataFrame, P: dict | None = None):
    g = sns.relplot(hist, x="epoch", y="cos_hidden", hue="method", col="act", row="layers", kind="line",
                    errorbar=("pi", 100), height=2.8, aspect=1.3, facet_kws={"sharey": False})
    g.set_axis_labels("epoch", "cos(update, BP grad)\nmean over hidden layers")
    g.figure.suptitle("Alignment with the true gradient (same batch, same masks, pre-update weights)"
                      + (f"\n{alignment_budget(P)}" if P else ""), y=1.02 if P is None else 1.05)
    return g.figure


def _by_depth(P: dict, key: str) -> dict:
    """``epochs_by_depth`` / ``seeds_by_depth`` keyed by int depth; a depth the figure does not run is one line."""
    by = {int(k): v for k, v in (P.get(key) or {}).items()}
    bad = sorted(set(by) - set(int(L) for L in P["depths"]))
    if bad:
        raise ConfigError(f"foton_alignment.{key}: {bad} not in depths {P['depths']}")
    return by


def _epochs_by_depth(P: dict) -> dict[int, int]:
    return _by_depth(P, "epochs_by_depth")


def _seeds_by_depth(P: dict) -> dict[int, list[int]]:
    """``seeds_by_depth`` (optional, ``{depth: [seeds]}``): a costly depth runs on fewer of ``seeds`` (e.g. the
    spec's 3 seeds at 10 layers while the 50-layer runs of seeds 2–3 are still training); it can only drop
    seeds, as ``seeds_by_method`` elsewhere."""
    by = _by_depth(P, "seeds_by_depth")
    extra = {L: sorted(set(v) - set(P["seeds"])) for L, v in by.items() if set(v) - set(P["seeds"])}
    if extra:  # a seed outside seeds would silently train nothing
        raise ConfigError(f"foton_alignment.seeds_by_depth: {extra} not in foton_alignment.seeds "
                          f"{list(P['seeds'])}; it can only drop seeds")
    return by


def alignment_budget(P: dict) -> str:
    """The title's budget line, with the depths that trained for fewer epochs or seeds (``epochs_by_depth``,
    ``seeds_by_depth``)."""
    by, seeds_at = _epochs_by_depth(P), _seeds_by_depth(P)
    if not by and not seeds_at:
        return budget(P, "20 epochs, ≥ 3 seeds")

    def n(L):
        k = len(seeds_at.get(int(L), P["seeds"]))
        return f"{k} seed{'s' * (k != 1)}"
    per = "; ".join(f"{L} layers: {by.get(int(L), P['epochs'])} epochs, {n(L)}" for L in P["depths"])
    return f"{per} (spec: 20 epochs, ≥ 3 seeds)"


# ------------------------------------------------------------------------- shallow table (E1, §6.1)
BJORCK_CONTROL = "BP+Björck"
BP_DROPOUT = "BP+dropout"  # BP's table config with FOTON's dropout (keep) on the hidden layers
SHALLOW_METHODS = ("FOTON", "BP", BP_DROPOUT, "PEPITA", "PEPITA+WM")


def shallow_jobs(P: dict, dataset: str) -> list[dict]:
    """foton.md §3.2 E1: FOTON, BP, PEPITA, PEPITA+WM on shallow FC nets, for both readings of "2-layer"
    (§6 item 1): ``readings`` maps a label to hidden widths, e.g. 1x1024 (2 weight layers, the PEPITA
    protocol) and 2x256 (the FOTON code's default [256, 256]). FOTON/BP: the FOTON code's defaults
    (orthogonal init, no bias, standardised inputs, plain SGD, batch 256); PEPITA(+WM): the official
    PEPITA settings (He-uniform init, no bias, inputs in [0, 1], SGD + momentum 0.9, batch 64, lr ×0.1 at
    the milestones). Method labels carry the reading unless it is ``primary`` (the claims' reading)."""
    check_known("foton_shallow.methods", P["methods"], SHALLOW_METHODS)
    keep = seed_filter(P, "foton_shallow", {m if r == P["primary"] else f"{m} {r}"
                                            for r in P["readings"] for m in P["methods"]})
    jobs = []
    for seed in P["seeds"]:
        for reading, widths in P["readings"].items():
            for method in P["methods"]:
                label = method if reading == P["primary"] else f"{method} {reading}"
                if not keep(label, seed):
                    continue  # fewer seeds for this method (cost), e.g. FOTON 1x1024: 42–95 min a run on a core
                if method in ("FOTON", "BP", BP_DROPOUT):
                    rule = ({"name": "foton", "keep": P["keep"], "ortho_every": P["ortho_every"],
                             "ff_every": P["ff_every"]} if method == "FOTON" else {"name": "bp"})
                    if method == BP_DROPOUT:  # foton.md §6 item 13: BP with FOTON's dropout
                        rule["keep"] = P["keep"]
                    if method == "FOTON" and P.get("bjorck_tol"):
                        rule["bjorck_tol"] = P["bjorck_tol"]
                    model = {"init": "orthogonal"}
                    optim = {"name": "sgd", "lr": P["lr"]["BP" if method == BP_DROPOUT else method]}
                    norm, bs = "standard", P["batch_size"]
                else:  # PEPITA, PEPITA+WM
                    rule = {"name": "pepita" if method == "PEPITA" else "pepita_wm", "keep": P["keep"]}
                    model = {"init": "he_uniform"}
                    pp = P["pepita"]
                    lr = pp["lr"][dataset] if isinstance(pp["lr"], dict) else pp["lr"]
                    optim = {"name": "sgd", "lr": lr, "momentum": pp["momentum"], "milestones": list(pp["milestones"])}
                    norm, bs = "unit", pp["batch_size"]
                cfg = {"dataset": {"name": dataset, "normalize": norm, "n_train": P.get("n_train"),
                                   "n_test": P.get("n_test")},
                       "model": {"arch": "mlp", "widths": list(widths), "act": P["act"], "loss": "ce", "bias": False,
                                 **model},
                       "rule": rule, "optim": optim, "epochs": P["epochs"], "batch_size": bs, "seed": seed}
                jobs.append({"dataset": dataset, "reading": reading, "method": label, "seed": seed,
                             "lr": optim["lr"], "part": "table", "config": cfg})
    return jobs + _lr_sweep_jobs(P, jobs) + _exact_bjorck_jobs(P, jobs)


def _check_reading(P: dict, part: str, reading) -> None:
    """One clear line when an optional part of ``foton_shallow`` names a reading the table does not run."""
    if reading not in P["readings"]:
        raise ConfigError(f"foton_shallow.{part}.reading: {reading!r} is not one of readings "
                          f"({', '.join(P['readings'])})")


EXACT_BJORCK = "FOTON (Björck: all iterations)"


def _exact_bjorck_jobs(P: dict, table: list[dict]) -> list[dict]:
    """``exact_bjorck`` (optional, ``{reading, seeds}``): the table's FOTON runs of that reading again with
    Björck's full ``bjorck_iters`` every step (``bjorck_tol`` 0, the authors' code) instead of stopping at the
    tolerance — whether the early stop (≈ 4 of 20 iterations; README) changes FOTON's accuracy. Part
    ``exact_bjorck``; nothing else differs from the table's run."""
    E = P.get("exact_bjorck")
    if not E:
        return []
    _check_reading(P, "exact_bjorck", E.get("reading"))
    if "FOTON" not in P["methods"]:
        raise ConfigError("foton_shallow.exact_bjorck needs FOTON in foton_shallow.methods")
    jobs = []
    for j in table:
        if j["reading"] == E["reading"] and j["method"].split(" ")[0] == "FOTON" and j["seed"] in E.get("seeds", P["seeds"]):
            cfg = copy.deepcopy(j["config"])
            cfg["rule"].pop("bjorck_tol", None)  # the rule's default 0: always bjorck_iters
            label = EXACT_BJORCK if E["reading"] == P["primary"] else f"{EXACT_BJORCK} {E['reading']}"
            jobs.append({**j, "method": label, "part": "exact_bjorck", "config": cfg})
    return jobs


def lr_grids(P: dict) -> list[dict]:
    """``lr_sweep`` (``foton_shallow``: ``{reading, methods, lrs, seeds}``; ``foton_depth``: ``{methods, lrs,
    seeds, depths}``): one grid or a list of them (e.g. the full grid where it is cheap and a few points
    where it is costly); none when null."""
    S = P.get("lr_sweep")
    return [] if not S else list(S) if isinstance(S, list) else [S]


def _lr_sweep_jobs(P: dict, table: list[dict]) -> list[dict]:
    """foton.md §6 item 3: the learning rate per dataset is unknown (the code's default 0.5 is one point),
    so the methods of each ``lr_sweep`` grid train on its ``lrs`` for its reading, the rest of the config as
    the table's; the table's own runs are the grid points they share (same config, same cached run).
    ``BP+Björck`` (foton.md §6 item 10: BP with the per-step Björck projection FOTON uses) is BP's table
    config with the projection added: it separates what the orthogonality constraint costs from what
    FOTON's forward-only update costs."""
    jobs, seen = [], set()
    for S in lr_grids(P):
        _check_reading(P, "lr_sweep", S.get("reading"))
        seeds = S.get("seeds", P["seeds"])  # the grid may use fewer seeds than the table
        for m in S["methods"]:
            base = "BP" if m == BJORCK_CONTROL else m
            if base not in P["methods"]:
                raise ConfigError(f"foton_shallow.lr_sweep.methods: {m!r} needs {base!r} in foton_shallow.methods")
            for j in table:
                if j["reading"] != S["reading"] or j["method"].split(" ")[0] != base or j["seed"] not in seeds:
                    continue
                for lr in S["lrs"]:
                    if m == base and float(lr) == float(j["lr"]):
                        continue
                    cfg = copy.deepcopy(j["config"])
                    cfg["optim"]["lr"] = float(lr)
                    label = j["method"]
                    if m == BJORCK_CONTROL:
                        cfg["rule"] = {"name": "bp", "ortho_every": P["ortho_every"] or 1,
                                       **({"bjorck_tol": P["bjorck_tol"]} if P.get("bjorck_tol") else {})}
                        label = m if j["reading"] == P["primary"] else f"{m} {j['reading']}"
                    if (label, j["seed"], float(lr)) not in seen:  # two grids may share a point
                        seen.add((label, j["seed"], float(lr)))
                        jobs.append({**j, "method": label, "lr": float(lr), "part": "lr_sweep", "config": cfg})
    return jobs


def run_shallow(P: dict, dataset: str, results: str = "results"):
    return _with_acc(*run_for_dataset(shallow_jobs(P, dataset), dataset, "foton_shallow", P, results))


def shallow_metrics(fin: pd.DataFrame) -> dict:
    """Final and best-epoch test accuracy per method (and reading), mean ± std over seeds."""
    from .common import agg
    tab = fin[fin.part == "table"] if "part" in fin else fin
    ok = tab[tab.status == "ok"]
    out = {"final_test_acc": {}, "best_test_acc": {}, "diverged_runs": int((tab.status != "ok").sum())}
    for m, g in ok.groupby("method"):
        out["final_test_acc"][m] = agg(g.final_test_acc)
        out["best_test_acc"][m] = agg(g.best_test_acc)
    ex = fin[fin.part == "exact_bjorck"] if "part" in fin else fin.iloc[0:0]
    if len(ex):  # Björck with every iteration vs the table's runs of the same reading and seeds (tolerance)
        ex_m = measured(ex)
        same = measured(tab[(tab.reading == ex.reading.iloc[0]) & (tab.method.str.split(" ").str[0] == "FOTON")
                            & tab.seed.isin(set(ex.seed))])
        out["exact_bjorck"] = {"reading": str(ex.reading.iloc[0]), "seeds": sorted(int(s) for s in set(ex.seed)),
                               "diverged": int((ex.status != "ok").sum()),
                               "final_test_acc": agg(ex_m.final_test_acc), "best_test_acc": agg(ex_m.best_test_acc),
                               "tolerance_runs": {"final_test_acc": agg(same.final_test_acc),
                                                  "best_test_acc": agg(same.best_test_acc)}}
    sw = lr_sweep_frame(fin)
    if len(sw):  # per method and lr: final / best test accuracy (diverged runs at their measured value)
        out["lr_sweep"] = {m: {f"{lr:g}": {"final": agg(g.final_test_acc), "best": agg(g.best_test_acc),
                                           "diverged": int((g.status != "ok").sum())}
                               for lr, g in gm.groupby("lr")} for m, gm in sw.groupby("method")}
        # per method, the grid point with the highest mean final accuracy (chosen on the test set, as the
        # authors' code chooses its epoch)
        out["lr_sweep_best"] = {}
        for m, per in out["lr_sweep"].items():
            lr, b = max(per.items(), key=lambda kv: kv[1]["final"]["mean"])
            out["lr_sweep_best"][m] = {"lr": float(lr), "final_test_acc": b["final"]["mean"],
                                       "best_test_acc": b["best"]["mean"]}
    return out


def lr_sweep_frame(fin: pd.DataFrame) -> pd.DataFrame:
    """The runs of the lr sweep's reading and methods: its own jobs plus the table runs it shares."""
    if "part" not in fin or not (fin.part == "lr_sweep").any():
        return fin.iloc[0:0]
    sw = fin[fin.part == "lr_sweep"]
    # the table's shared points may have more seeds than a grid: each grid's own seeds only
    keys = set(zip(sw.reading, sw.method, sw.seed))
    return measured(fin[[k in keys for k in zip(fin.reading, fin.method, fin.seed)]])


def plot_lr_sweep(fin: pd.DataFrame, dataset: str, P: dict | None = None):
    """Final (solid) and best-epoch (dotted) test accuracy against the learning rate, per method."""
    d = lr_sweep_frame(fin)
    if d.reading.nunique() > 1:  # grids on two readings: name each line's reading (the primary's labels have none)
        d = d.assign(method=[m if r in m else f"{m} {r}" for m, r in zip(d.method, d.reading)])
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    long = pd.concat([d.assign(metric="final", acc=d.final_test_acc), d.assign(metric="best epoch", acc=d.best_test_acc)],
                     ignore_index=True)
    sns.lineplot(long, x="lr", y="acc", hue="method", style="metric", markers=True, errorbar=("pi", 100), ax=ax)
    mark_diverged(ax, d, "lr")
    if dataset in REPORTED_SHALLOW:
        ax.axhline(REPORTED_SHALLOW[dataset], color="gold", ls="--", lw=1.2, label="paper: FOTON 2-layer")
    ax.set_xscale("log")
    lrs = sorted(set(d.lr))
    ax.set_xticks(lrs, [f"{v:g}" for v in lrs])
    ax.minorticks_off()
    ax.set_xlabel("learning rate (plain SGD, constant for FOTON and BP)")
    ax.set_ylabel("test accuracy (%)")
    # the informative range is the top few points; runs far below (large lr) are listed as text in a corner,
    # so they do not squash the rest
    good = long.acc[long.acc >= 90.0]
    lo = (float(good.min()) if len(good) else float(long.acc.min()) if len(long) else 0.0) - 1.0
    hi = max(float(long.acc.max()) if len(long) else 100.0, REPORTED_SHALLOW.get(dataset, 0.0)) + 0.5
    ax.set_ylim(lo, min(100.0, hi))
    lines = []
    for (lr, m), g in long[long.acc < lo].groupby(["lr", "method"]):
        vals = ", ".join(f"{r.metric} {r.acc:.1f}" for r in g.drop_duplicates("metric").itertuples())
        lines.append(f"lr {lr:g}, {m}: {vals}" + (" (diverged)" if (d[(d.lr == lr) & (d.method == m)].status
                                                                   != "ok").any() else ""))
    if lines:
        ax.text(0.02, 0.03, "below the axis:\n" + "\n".join(lines), transform=ax.transAxes, fontsize=7,
                color="0.3", va="bottom")
    if P:  # each grid's reading and seed count: the grids may differ
        grids = lr_grids(P)
        readings = ", ".join(dict.fromkeys(S["reading"] for S in grids))
        n = [len(S.get("seeds", P["seeds"])) for S in grids]
        line = f"{P['epochs']} epochs; " + "; ".join(f"{S['reading']} grid: {k} seed{'s' * (k != 1)}"
                                                      for S, k in zip(grids, n)) + " (spec: 100 epochs, ≥ 3 seeds)"
    ax.set_title(f"FOTON vs BP learning rate, {dataset}" + (f" ({readings})\n{line}" if P else ""), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


# foton.md §4: FOTON's reported 2-layer accuracies (which reading they used is unknown)
REPORTED_SHALLOW = {"mnist": 98.32, "cifar10": 55.70, "cifar100": 28.48}


def plot_shallow(hist: pd.DataFrame, dataset: str, P: dict | None = None):
    fig, ax = plt.subplots(figsize=(10, 4.5))
    h = hist[(hist.epoch >= 1) & (hist.part.isin(["table", "exact_bjorck"]) if "part" in hist else True)]
    sns.lineplot(h, x="epoch", y="test_acc", hue="method", errorbar=("pi", 100), ax=ax)
    if dataset in REPORTED_SHALLOW:
        ax.axhline(REPORTED_SHALLOW[dataset], color="gold", ls="--", lw=1.2, label="paper: FOTON 2-layer")
    lo = float(h.test_acc.quantile(0.05))
    ax.set_ylim(max(0.0, lo - 2), min(100.0, max(float(h.test_acc.max()), REPORTED_SHALLOW.get(dataset, 0.0)) + 1))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"FOTON shallow FC nets, {dataset}: both readings of '2-layer'"
                 + (f"\n{budget(P, '100 epochs, ≥ 3 seeds')}" if P else ""), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: 10+ curves
    fig.tight_layout()
    return fig
