"""FFzero (arXiv 2603.24790): test accuracy vs hidden width for BP+AD, BP+DD, FF+AD and FF+DD on the
MLP 784→w→w→w→10 (no nonlinearity, as the authors' code; ffzero.md §2.11, §6 Q1), median and IQR over
seeds, total parameter count per width. Widths and epochs are the spec's recommendations (§7)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..rules import rule_config
from .common import run_for_dataset

PARADIGMS = ("BP+AD", "BP+DD", "FF+AD", "FF+DD")


def n_params(width: int, n_in: int = 784, n_out: int = 10, hidden: int = 3) -> int:
    sizes = [n_in] + [width] * hidden + [n_out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def width_jobs(P: dict, dataset: str) -> list[dict]:
    jobs = []
    for seed in P["seeds"]:
        for w in P["widths"]:
            for p in P["paradigms"]:
                rule = rule_config(p, **({"directions": P["directions"], "eps": P["eps"]} if p.endswith("DD") else {}))
                optim = {"name": "adam" if p.endswith("AD") else "sgd", "lr": P["lr"]}
                cfg = {"dataset": {"name": dataset, "normalize": "unit", "n_train": P.get("n_train"),
                                   "n_test": P.get("n_test")},
                       "model": {"arch": "mlp", "width": w, "depth": P["hidden_layers"], "act": P["act"], "loss": "ce"},
                       "rule": rule, "optim": optim, "epochs": P["epochs"], "batch_size": P["batch_size"], "seed": seed}
                jobs.append({"dataset": dataset, "width": w, "params": n_params(w), "paradigm": p, "seed": seed,
                             "config": cfg})
    return jobs


def run(P: dict, dataset: str, results: str = "results"):
    hist, fin, reason = run_for_dataset(width_jobs(P, dataset), dataset, "ffzero_width", P, results)
    if reason is not None:
        return None, None, reason
    fin["final_test_acc"] = 100.0 - fin["final_test_error"]
    return hist, fin, None


def metrics(fin: pd.DataFrame) -> dict:
    ok = fin[fin.status == "ok"]
    med = ok.groupby(["paradigm", "width"]).final_test_acc.median().unstack(0)
    out = {"median_test_acc": {p: {str(w): float(v) for w, v in med[p].items()} for p in med.columns}}
    have = set(med.columns)
    if {"BP+AD", "FF+AD"} <= have:
        out["ff_ad_within_3_of_bp_ad"] = bool((med["BP+AD"] - med["FF+AD"]).abs().max() <= 3)
    if {"FF+AD", "FF+DD"} <= have:
        out["ff_dd_within_5_of_ff_ad"] = bool((med["FF+AD"] - med["FF+DD"]).abs().max() <= 5)
    if {"BP+DD", "FF+DD"} <= have and len(med) > 1:
        ws = sorted(med.index)
        out["bp_dd_drop_small_to_large"] = float(med["BP+DD"][ws[0]] - med["BP+DD"][ws[-1]])
        out["ff_dd_range"] = float(med["FF+DD"].max() - med["FF+DD"].min())
        out["bp_dd_loses_20_ff_dd_flat"] = bool(out["bp_dd_drop_small_to_large"] >= 20 and out["ff_dd_range"] <= 5)
    return out


def plot_width(fin: pd.DataFrame, dataset: str):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ok = fin[fin.status == "ok"]
    for p, g in ok.groupby("paradigm"):
        q = g.groupby("width").final_test_acc.quantile([0.25, 0.5, 0.75]).unstack()
        ax.plot(q.index, q[0.5], marker="o", label=p)
        ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.2)
    ax.set_xscale("log")
    ws = sorted(set(ok.width))
    ax.set_xticks(ws, [f"{w}\n{n_params(w) / 1e3:.0f}k" for w in ws], fontsize=8)
    ax.set_xlabel("hidden width (total parameters)")
    ax.set_ylabel("test accuracy (%), median and IQR")
    ax.set_title(f"FFzero width sweep, {dataset}, MLP 784-w-w-w-10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------- diagnostic: DD vs true gradient
def dd_cosine(P: dict):
    """Cosine between the DD estimate and the true gradient vs the size d of the perturbed block:
    BP+DD perturbs the whole network (global CE), FF+DD one layer (its local hinge loss). Real MNIST
    batches, untrained nets 784-w-w-w-10; ``draws`` estimates per point. For K directions the expected
    cosine is ≈ √(2K/(πd)) when K ≪ d (the estimate's direction is a random projection)."""
    import math

    import torch

    from .. import data as data_mod
    from ..models import MLP, loss_value
    from ..rules import Batch, make_rule

    d = data_mod.load("mnist", normalize="unit", n_train=P["batch_size"] * P["batches"])
    rows = []
    torch.manual_seed(P["seed"])
    for w in P["widths"]:
        for k in P["directions"]:
            model = MLP([784, w, w, w, 10], act=P["act"], loss="ce").requires_grad_(False)
            blocks = [("BP+DD", None)] + [(f"FF+DD layer {i + 1}", i) for i in range(len(model.layers))]
            for paradigm, layer in blocks:
                if layer is None:
                    est = make_rule({"name": "bp_dd", "directions": k, "eps": P["eps"]})
                    params = list(model.parameters())
                else:
                    est = make_rule({"name": "ff", "estimator": "dd", "directions": k, "eps": P["eps"]})
                    est.setup(model, len(d.x_train))
                    est.begin_phase(model, layer, d)
                    params = list(model.layers[layer].parameters())
                size = sum(p.numel() for p in params)
                for draw in range(P["draws"]):
                    s = (draw % P["batches"]) * P["batch_size"]
                    idx = torch.arange(s, s + P["batch_size"])
                    b = Batch(idx, d.x_train[idx], d.y_train[idx])
                    with torch.enable_grad():  # the true gradient of this batch's loss
                        for p in params:
                            p.requires_grad_(True)
                        if layer is None:
                            loss = loss_value("ce", model(b.x), b.y)
                        else:
                            loss = est.local_loss(model.layers[layer](est.cache[idx]), b.y.argmax(1), layer)
                        true = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
                        for p in params:
                            p.requires_grad_(False)
                    est.step(model, b)
                    g = torch.cat([p.grad.flatten() for p in params])
                    rows.append({"paradigm": paradigm, "width": w, "block_size": size, "directions": k,
                                 "draw": draw, "cos": float(g @ true / (g.norm() * true.norm()).clamp_min(1e-30)),
                                 "theory": math.sqrt(2 * k / (math.pi * size))})
    return pd.DataFrame(rows)


def dd_metrics(df: pd.DataFrame) -> dict:
    m = df.groupby(["paradigm", "directions", "width"]).agg(cos=("cos", "mean"), block=("block_size", "first"),
                                                            theory=("theory", "first")).reset_index()
    return {f"{r.paradigm}|K={r.directions}|w={r.width}": {"block_size": int(r.block), "mean_cos": float(r.cos),
                                                           "theory": float(r.theory)} for r in m.itertuples()}


def plot_dd_cosine(df: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    m = df.groupby(["paradigm", "directions", "block_size"]).cos.agg(["mean", "std"]).reset_index()
    for (p, k), g in m.groupby(["paradigm", "directions"]):
        ax.errorbar(g.block_size, g["mean"], yerr=g["std"], marker="o", capsize=3, label=f"{p}, K={k}")
    t = df.groupby(["directions", "block_size"]).theory.first().reset_index()
    for k, g in t.groupby("directions"):
        ax.plot(g.block_size, g.theory, "k--", lw=0.8, label="√(2K/πd)" if k == t.directions.min() else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters in the perturbed block, d")
    ax.set_ylabel("cos(DD estimate, true gradient)")
    ax.set_title("Directional-derivative estimates vs block size (untrained nets, MNIST batches)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
