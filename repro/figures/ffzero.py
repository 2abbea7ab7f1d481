"""FFzero (arXiv 2603.24790): test accuracy vs hidden width for BP+AD, BP+DD, FF+AD and FF+DD on the
MLP 784→w→w→w→10 (no nonlinearity, as the authors' code; ffzero.md §2.11, §6 Q1), median and IQR over
seeds, total parameter count per width. Widths and epochs are the spec's recommendations (§7)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..rules import rule_config
from ..train import torch_threads
from .common import measured, run_for_dataset

PARADIGMS = ("BP+AD", "BP+DD", "FF+AD", "FF+DD")


def n_params(width: int, n_in: int = 784, n_out: int = 10, hidden: int = 3) -> int:
    sizes = [n_in] + [width] * hidden + [n_out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def cnn_params(c: int, fc: list[int] = (), kernel: int = 6, padding: int = 2, n_in=(1, 28, 28), n_out: int = 10) -> int:
    """Conv kernels + FC weights and biases (the authors' logged count: BatchNorm's 2c per block left out)."""
    cin, h, w, total = n_in[0], n_in[1], n_in[2], 0
    for _ in range(2):
        total += c * cin * kernel * kernel
        h, w, cin = (h + 2 * padding - kernel + 1) // 2, (w + 2 * padding - kernel + 1) // 2, c
    sizes = [cin * h * w] + list(fc) + [n_out]
    return total + sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _paradigm_rule(P: dict, p: str, weight_decay: float = 0.0) -> tuple[dict, dict]:
    rule = rule_config(p, **({"directions": P["directions"], "eps": P["eps"]} if p.endswith("DD") else {}))
    optim = {"name": "adam" if p.endswith("AD") else "sgd", "lr": P["lr"]}
    if weight_decay and p == "BP+AD":  # the authors' BP CNN baseline: Adam with weight decay (§2.7)
        optim["weight_decay"] = weight_decay
    return rule, optim


def width_jobs(P: dict, dataset: str) -> list[dict]:
    jobs = []
    for seed in P["seeds"]:
        for w in P["widths"]:
            for p in P["paradigms"]:
                rule, optim = _paradigm_rule(P, p)
                cfg = {"dataset": {"name": dataset, "normalize": "unit", "n_train": P.get("n_train"),
                                   "n_test": P.get("n_test")},
                       "model": {"arch": "mlp", "width": w, "depth": P["hidden_layers"], "act": P["act"], "loss": "ce"},
                       "rule": rule, "optim": optim, "epochs": P["epochs"], "batch_size": P["batch_size"], "seed": seed}
                jobs.append({"dataset": dataset, "arch": "mlp", "width": w, "params": n_params(w), "paradigm": p,
                             "seed": seed, "config": cfg})
    return jobs


def cnn_jobs(P: dict, dataset: str) -> list[dict]:
    """The CNN channel sweep (params section ``ffzero_cnn``; ffzero.md §2.11, §7 item 2): 2 conv blocks of
    c channels (kernel 6, pad 2, BatchNorm, ReLU, max-pool 2), FC ``fc`` + 10; ``width`` column = c."""
    jobs = []
    for seed in P["seeds"]:
        for c in P["channels"]:
            for p in P["paradigms"]:
                rule, optim = _paradigm_rule(P, p, P["weight_decay"])
                if p.startswith("FF"):
                    rule["ref_dim"] = P["ref_dim"]
                cnn = {"channels": [c, c], "fc": list(P["fc"]), "conv_dropout": P["dropout"],
                       "fc_dropout": P["dropout"]}
                cfg = {"dataset": {"name": dataset, "normalize": "unit", "n_train": P.get("n_train"),
                                   "n_test": P.get("n_test")},
                       "model": {"arch": "cnn", "act": "relu", "loss": "ce", "cnn": cnn},
                       "rule": rule, "optim": optim, "epochs": P["epochs"], "batch_size": P["batch_size"], "seed": seed}
                jobs.append({"dataset": dataset, "arch": "cnn", "width": c, "params": cnn_params(c, P["fc"]),
                             "paradigm": p, "seed": seed, "config": cfg})
    return jobs


def run(P: dict, dataset: str, results: str = "results", arch: str = "mlp"):
    """The MLP width sweep (section ``ffzero_width``) or the CNN channel sweep (``ffzero_cnn``)."""
    jobs = width_jobs(P, dataset) if arch == "mlp" else cnn_jobs(P, dataset)
    hist, fin, reason = run_for_dataset(jobs, dataset, "ffzero_width" if arch == "mlp" else "ffzero_cnn", P, results)
    if reason is not None:
        return None, None, reason
    fin["final_test_acc"] = 100.0 - fin["final_test_error"]
    return hist, fin, None


def _checks(med: pd.DataFrame) -> dict:
    out = {"median_test_acc": {p: {str(w): float(v) for w, v in med[p].items()} for p in med.columns}}
    have = set(med.columns)
    if {"BP+AD", "FF+AD"} <= have:  # |difference| of medians at the worst width ("within": either side)
        out["ff_ad_max_abs_gap_to_bp_ad"] = float((med["BP+AD"] - med["FF+AD"]).abs().max())
        out["ff_ad_within_3_of_bp_ad"] = bool(out["ff_ad_max_abs_gap_to_bp_ad"] <= 3)
    if {"FF+AD", "FF+DD"} <= have:
        out["ff_dd_max_abs_gap_to_ff_ad"] = float((med["FF+AD"] - med["FF+DD"]).abs().max())
        out["ff_dd_within_5_of_ff_ad"] = bool(out["ff_dd_max_abs_gap_to_ff_ad"] <= 5)
    if {"BP+DD", "FF+DD"} <= have and len(med) > 1:
        ws = sorted(med.index)
        out["bp_dd_drop_small_to_large"] = float(med["BP+DD"][ws[0]] - med["BP+DD"][ws[-1]])
        out["ff_dd_range"] = float(med["FF+DD"].max() - med["FF+DD"].min())
        out["bp_dd_loses_20_ff_dd_flat"] = bool(out["bp_dd_drop_small_to_large"] >= 20 and out["ff_dd_range"] <= 5)
    return out


def metrics(fin: pd.DataFrame) -> dict:
    """Medians per paradigm and width (hidden width or channels), and the issue's checks (#4 item 5).
    A diverged run counts at the accuracy its final (non-finite) model was measured at — chance level —
    since failing to train at a width is exactly what BP+DD's check is about; they are also listed."""
    done = measured(fin)
    out = _checks(done.groupby(["paradigm", "width"]).final_test_acc.median().unstack(0))
    bad = fin[fin.status != "ok"]
    out["diverged_runs"] = int(len(bad))
    out["diverged"] = [{"paradigm": r.paradigm, "width": int(r.width), "seed": int(r.seed),
                        "epochs_done": int(r.epochs_done), "final_test_acc": float(r.final_test_acc)}
                       for r in bad.itertuples()]
    return out


def plot_width(fin: pd.DataFrame, dataset: str, arch: str = "mlp", P: dict | None = None):
    """``P`` (the section's parameters), when given, puts the epochs and seeds that ran in the title."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ok = measured(fin)  # diverged runs at their measured (chance-level) accuracy, marked ×
    for p, g in ok.groupby("paradigm"):
        q = g.groupby("width").final_test_acc.quantile([0.25, 0.5, 0.75]).unstack()
        line, = ax.plot(q.index, q[0.5], marker="o", label=p)
        ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.2)
        bad = g[g.status != "ok"]
        if len(bad):
            ax.scatter(bad.width, bad.final_test_acc, marker="x", s=80, color=line.get_color(), zorder=3,
                       label=f"{p} diverged")
    ax.set_xscale("log")
    counts = ok.groupby("width").params.first()
    ax.set_xticks(list(counts.index), [f"{w}\n{n / 1e3:.1f}k" if n < 1e4 else f"{w}\n{n / 1e3:.0f}k"
                                       for w, n in counts.items()], fontsize=8)
    ax.minorticks_off()
    if arch == "mlp":
        ax.set_xlabel("hidden width w (total parameters)")
        ax.set_title(f"FFzero width sweep, {dataset}, MLP 784-w-w-w-10")
    else:
        ax.set_xlabel("channels per conv layer c (total parameters)")
        ax.set_title(f"FFzero channel sweep, {dataset}, CNN 2×[conv6-BN-ReLU-pool]-FC")
    if P is not None:
        ax.set_title(ax.get_title() + f"\n{P['epochs']} epoch{'s' * (P['epochs'] != 1)} per layer (FF) / in all (BP); "
                     f"{len(P['seeds'])} seed(s); spec: 100 per layer, 3 seeds", fontsize=10)
    ax.set_ylabel("test accuracy (%), median and IQR")
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------- regression (§2.8)
def regression_jobs(P: dict) -> list[dict]:
    """R² per paradigm on function1, function2 and MNIST-as-regression (ffzero.md §2.8, §7 item 9): MLP
    d_in→100→100→100→(1 for BP; 10 read against an antipodal prototype for FF), no nonlinearity."""
    jobs = []
    for ds in P["datasets"]:
        for seed in P["seeds"]:
            for p in P["paradigms"]:
                rule, optim = _paradigm_rule(P, p)
                ff = p.startswith("FF")
                cfg = {"dataset": {"name": ds, "normalize": "unit", "n_train": P.get("n_train"), "n_test": P.get("n_test")},
                       "model": {"arch": "mlp", "widths": list(P["widths"]), "act": P["act"], "loss": "mse",
                                 "out_width": P["ff_out_width"] if ff else None},
                       "rule": rule, "optim": optim, "epochs": (P.get("epochs_by_dataset") or {}).get(ds, P["epochs"]),
                       "batch_size": P["batch_size"], "seed": seed}
                jobs.append({"dataset": ds, "paradigm": p, "seed": seed, "config": cfg})
    return jobs


def run_regression(P: dict, results: str = "results"):
    from .. import data as data_mod
    from .common import final_frame, history_frame, run_all, store_for
    jobs = regression_jobs(P)
    for ds in P["datasets"]:
        reason = data_mod.try_fetch(ds)
        if reason is not None:
            raise data_mod.DataUnavailable(reason)
    done = run_all(jobs, store_for("ffzero_regression", results), P, desc="ffzero_regression")
    hist, fin = history_frame(done), final_frame(done)
    var = {}
    for ds in P["datasets"]:
        d = data_mod.load(ds, normalize="unit", n_train=P.get("n_train"), n_test=P.get("n_test"))
        var[ds] = float(d.y_test.var(unbiased=False))
    fin["test_r2"] = [1.0 - r.final_test_loss / var[r.dataset] for r in fin.itertuples()]
    hist["test_r2"] = [1.0 - r.test_loss / var[r.dataset] for r in hist.itertuples()]
    return hist, fin


def regression_metrics(fin: pd.DataFrame) -> dict:
    """Test R² (last layer for FF, the output for BP), median / mean / std over seeds."""
    ok = fin[fin.status == "ok"]
    out = {"test_r2": {}, "diverged_runs": int((fin.status != "ok").sum())}
    for (ds, p), g in ok.groupby(["dataset", "paradigm"]):
        out["test_r2"].setdefault(ds, {})[p] = {"median": float(g.test_r2.median()), "mean": float(g.test_r2.mean()),
                                                "std": float(g.test_r2.std(ddof=1)) if len(g) > 1 else 0.0, "n": len(g)}
    return out


def plot_regression(fin: pd.DataFrame):
    ok = fin[fin.status == "ok"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    sns.barplot(data=ok, x="dataset", y="test_r2", hue="paradigm", errorbar=("pi", 50), estimator="median", ax=ax)
    ax.set_ylabel("test R² (median, IQR over seeds)")
    ax.set_xlabel("")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(min(-0.1, float(ok.test_r2.min()) - 0.05), 1.02)
    ax.set_title("FFzero regression: R² per paradigm (FF reads cos(z, p) of an antipodal prototype)")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    return fig


def regression_predictions(P: dict, dataset: str, paradigm: str = "FF+DD", results: str = "results",
                           n: int = 2000):
    """(true, predicted) test targets of the first seed's trained model, in [−1, 1] units."""
    import torch

    from .. import data as data_mod
    from ..rules import make_rule
    from .common import store_for
    job = next(j for j in regression_jobs(P) if j["dataset"] == dataset and j["paradigm"] == paradigm)
    model, rule_state = store_for("ffzero_regression", results).load_weights(job["config"])
    d = data_mod.load(dataset, normalize="unit", n_train=P.get("n_train"), n_test=P.get("n_test"))
    x, y = d.x_test[:n], d.y_test[:n, 0]
    with torch.no_grad():
        model.eval()
        if paradigm.startswith("FF"):
            h = x
            for lin in model.layers:
                z = lin(h)
                h = model.act.fn(z)
            p = rule_state["P" + str(len(model.layers) - 1)]
            pred = torch.nn.functional.normalize(z, dim=-1) @ p.view(-1)
        else:
            pred = model(x)[:, 0]
    return y.numpy(), pred.numpy()


def plot_predicted_vs_true(pairs: dict):
    """``pairs``: {title: (true, predicted)} → one scatter panel each."""
    ncols = min(2, len(pairs))
    nrows = -(-len(pairs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.set_axis_off()
    for ax, (title, (t, p)) in zip(axes.flat, pairs.items()):
        ax.scatter(t, p, s=3, alpha=0.3)
        ax.plot([-1, 1], [-1, 1], "k--", lw=0.8)
        ax.set_xlabel("true (scaled to [−1, 1])")
        ax.set_ylabel("predicted")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------- diagnostic: DD vs true gradient
@torch_threads(1)  # as the runs train: the same digits at any core count (was 2 threads in notebooks)
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
