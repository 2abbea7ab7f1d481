"""``python -m repro bench``: time per training step (and per epoch) and peak memory of each rule on the
same MLP, in one process, as ratios to BP; then FOTON by depth, the FFzero paradigms and FTP's CNN.

Peak memory is the largest total size of tensors allocated *by one training step* and alive at the
same time (activations, autograd's saved tensors, updates, temporaries; parameters, data and optimizer
state are excluded): on CUDA from ``torch.cuda.max_memory_allocated``, on the CPU by tracking every
tensor an operator returns (a ``TorchDispatchMode``) until it is freed.

The headline row times a full MNIST epoch (the fastest of 3; d=1, w=500, batch 50: 1,200 steps plus the evaluation of
the training and test sets) for BP and F³, against 31.5 s measured for the F³ authors' code on this
2-core machine.
"""
from __future__ import annotations

import json
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .models import CNN, MLP
from .rules import Batch, make_rule
from .train import cpu_capability, cpu_model, evaluate, keep_freed_memory, make_optimizer, resolve_device

AUTHORS_EPOCH_S = 31.5  # F³ authors' code, MNIST d=1 w=500 batch 50, on this 2-core machine (issue #2)
RULES = ["bp", "dfa", "drtp", "f3", "pepita", "ftp"]
RULE_CFG = {"foton_low_memory": {"name": "foton", "low_memory": True},
            "ff_ad": {"name": "ff", "estimator": "ad"}, "ff_dd": {"name": "ff", "estimator": "dd"}}
FF_NET = ("bp", "bp_dd", "ff_ad", "ff_dd")


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensors created inside the context (shared storages counted once)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.refs: dict[int, list[int]] = {}

    def _release(self, ptr: int) -> None:
        r = self.refs.get(ptr)
        if r is None:
            return
        r[1] -= 1
        if r[1] == 0:
            self.live -= r[0]
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                ptr = st.data_ptr()
                if ptr not in self.refs and ptr in inputs:
                    continue  # in-place result or view of memory that existed before: no allocation
                if ptr not in self.refs:
                    self.refs[ptr] = [st.nbytes(), 0]
                    self.live += st.nbytes()
                    self.peak = max(self.peak, self.live)
                self.refs[ptr][1] += 1
                weakref.finalize(t, self._release, ptr)
        return out


NETS = ("f3", "foton", "ff", "cnn")


def _model(net: str, width: int, depth: int, x: torch.Tensor, y: torch.Tensor):
    if net == "ff":  # FFzero's MLP: no nonlinearity, CE for the BP paradigms
        return MLP([x.shape[1]] + [width] * depth + [y.shape[1]], act="identity", loss="ce")
    if net == "foton":  # FOTON's default net: orthogonal init, no bias, ReLU, softmax cross-entropy
        return MLP([x.shape[1]] + [width] * depth + [y.shape[1]], act="relu", loss="ce", bias=False, init="orthogonal")
    if net == "cnn":  # FTP's CNN (ftp.md §4.2, PEPITA's Net1conv1fc): conv 5×5 → `width` maps, ReLU, max-pool, FC
        return CNN((1, 28, 28), y.shape[1], channels=[width], kernel=5, padding=0, bn=False, bias=False,
                   init="he_uniform", act="relu", loss="ce")
    if net == "f3":  # F³'s MLP
        return MLP([x.shape[1]] + [width] * depth + [y.shape[1]], act="tanh", loss="bce")
    raise ValueError(f"bench net={net!r}; allowed: {', '.join(NETS)}")


def _setup(rule_name: str, width: int, depth: int, x: torch.Tensor, y: torch.Tensor, dev, net: str = "f3",
           rule_cfg: dict | None = None):
    torch.manual_seed(0)
    model = _model(net, width, depth, x, y).to(dev)
    rule = make_rule(rule_cfg or RULE_CFG.get(rule_name, {"name": rule_name}))
    rule.setup(model, len(x))
    if hasattr(rule, "init_buffer"):
        rule.init_buffer(y)
    for p in model.parameters():
        p.requires_grad_(rule.needs_autograd)
    if net == "ff" and rule_name.startswith("ff"):
        from .data import Data
        rule.begin_phase(model, 1, Data("bench", "classification", x, y, x[:1], y[:1]))  # train layer 2
        group = list(model.layers[1].parameters())
        return model, rule, make_optimizer(group, {"name": "adam" if rule_name == "ff_ad" else "sgd", "lr": 1e-3,
                                                   "momentum": 0.0, "weight_decay": 0.0, "milestones": []})[0]
    if rule_name in ("pepita", "foton", "foton_low_memory", "bp_dd") or net == "cnn":
        opt, _ = make_optimizer(rule.trainable(model), {"name": "sgd", "lr": 0.01, "momentum": 0.9,
                                                        "weight_decay": 0.0, "milestones": []})
    else:
        opt, _ = make_optimizer(rule.trainable(model), {"name": "adam", "lr": 1e-4, "weight_decay": 0.0,
                                                        "milestones": []})
    return model, rule, opt


def _step(model, rule, opt, x, y, idx):
    b = Batch(idx, x[idx], y[idx])
    out = rule.step(model, b)
    opt.step()
    rule.after_step(model, b, out)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(rule_name, width, depth, x, y, dev, batch=50, steps=50, warmup=5, net="f3", rule_cfg=None) -> dict:
    model, rule, opt = _setup(rule_name, width, depth, x, y, dev, net, rule_cfg)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g).to(dev)
    idxs = [perm[(i * batch) % (len(x) - batch):][:batch] for i in range(warmup + steps + 1)]
    for i in range(warmup):
        _step(model, rule, opt, x, y, idxs[i])
    _sync(dev)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        _step(model, rule, opt, x, y, idxs[i])
    _sync(dev)
    ms = (time.perf_counter() - t) / steps * 1e3
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(model, rule, opt, x, y, idxs[-1])
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with PeakTensorMemory() as m:
            _step(model, rule, opt, x, y, idxs[-1])
        peak = m.peak
    return {"ms_per_step": ms, "peak_mb": peak / 2**20}


def full_epoch(rule_name, x, y, xt, yt, lt, ltr, dev, batch=50) -> float:
    """Seconds for one MNIST epoch (d=1, w=500): training plus evaluation of train and test sets."""
    model, rule, opt = _setup(rule_name, 500, 1, x, y, dev)
    g = torch.Generator().manual_seed(0)
    _sync(dev)
    t = time.perf_counter()
    perm = torch.randperm(len(x), generator=g).to(dev)
    for s in range(0, len(x), batch):
        _step(model, rule, opt, x, y, perm[s:s + batch])
    evaluate(model, x, y, ltr)
    evaluate(model, xt, yt, lt)
    _sync(dev)
    return time.perf_counter() - t


def _mnist(dev):
    try:
        from .data import load
        d = load("mnist", fetch_missing=True)
        return d.x_train.to(dev), d.y_train.to(dev), d.x_test.to(dev), d.y_test.to(dev), d.labels_test.to(dev), \
            d.labels_train.to(dev), "MNIST"
    except Exception as exc:  # no data: same shapes, random values (timing does not depend on them)
        print(f"(MNIST unavailable: {exc}; timing on random data of the same shape)")
        g = torch.Generator().manual_seed(0)
        x, xt = torch.randn(60000, 784, generator=g), torch.randn(10000, 784, generator=g)
        lab, labt = torch.randint(0, 10, (60000,), generator=g), torch.randint(0, 10, (10000,), generator=g)
        oh = lambda l: torch.nn.functional.one_hot(l, 10).float()  # noqa: E731
        return x.to(dev), oh(lab).to(dev), xt.to(dev), oh(labt).to(dev), labt.to(dev), lab.to(dev), "random"


def run(quick: bool = False, device: str = "auto") -> dict:
    keep_freed_memory()  # as train() does: the rules are timed as they train
    dev = resolve_device(device)
    x, y, xt, yt, lt, ltr, src = _mnist(dev)
    steps = 10 if quick else 60
    shapes = [(500, 1), (500, 4), (2048, 1), (2048, 4)]
    rows = []
    for w, d in shapes:
        base = None
        for r in RULES:
            res = time_steps(r, w, d, x, y, dev, steps=steps)
            if r == "bp":
                base = res
            rows.append({"width": w, "depth": d, "rule": r, **res, "epoch_s": res["ms_per_step"] * 1200 / 1e3,
                         **_vs_bp(res, base)})
    # the fastest of 3 epochs each: one epoch on this shared 2-core VM varied 2.1–3.7 s (session 37)
    epochs = {r: min(full_epoch(r, x, y, xt, yt, lt, ltr, dev) for _ in range(3)) for r in ("bp", "f3")} \
        if not quick else {}
    foton = []
    for layers in (2, 10, 50):  # weight layers; FOTON's defaults: width 256, batch 256, Björck every step
        n = max(2, steps // (1 if layers < 50 else 10))
        base = None
        for r in ("bp", "foton", "foton_low_memory"):
            res = time_steps(r, 256, layers - 1, x, y, dev, batch=256, steps=n, warmup=2, net="foton")
            base = base or res
            foton.append({"layers": layers, "rule": r, **res, **_vs_bp(res, base)})
    return {"device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "keep_freed_memory": keep_freed_memory(),
            "cpu": cpu_model(), "cpu_capability": cpu_capability(), "data": src, "steps_timed": steps,
            "rows": rows, "full_epoch_s": epochs, "authors_epoch_s": AUTHORS_EPOCH_S, "foton": foton,
            "ffzero": ffzero_rows(x, y, dev, steps), "cnn": cnn_rows(x, y, dev, steps)}


def _vs_bp(res: dict, base: dict) -> dict:
    """A timed rule's step time and peak memory relative to its section's BP row (NaN memory when BP's is 0)."""
    return {"time_vs_bp": res["ms_per_step"] / base["ms_per_step"],
            "mem_vs_bp": res["peak_mb"] / base["peak_mb"] if base["peak_mb"] else float("nan")}


def cnn_rows(x, y, dev, steps) -> list[dict]:
    """FTP vs BP (and PEPITA, DRTP) on FTP's CNN (conv 5×5 → 32 maps, ReLU, max-pool 2, FC 4608 → 10; no
    biases; batch 50), per step — ftp.md §4.4's "measured wall-clock and peak memory" for the CNN row. The rules
    as the FTP table's CNN rows configure them (``figures.ftp.CNN_RULES``: PEPITA without dropout on conv nets)."""
    from .figures.ftp import CNN_RULES
    out, base = [], None
    for cfg in CNN_RULES.values():
        r = cfg["name"]
        res = time_steps(r, 32, 0, x, y, dev, steps=steps, net="cnn", rule_cfg=cfg)
        base = base or res
        out.append({"rule": r, **res, **_vs_bp(res, base)})
    return out


def ffzero_rows(x, y, dev, steps) -> list[dict]:
    """FFzero's paradigms on its MLP (784-w-w-w-10, no activation, batch 256), per step; FF rules time
    one step of layer 2 (a w×w layer), the BP rules a step of the whole net."""
    out = []
    for w in (100, 1000):
        base = None
        for r in FF_NET:
            res = time_steps(r, w, 3, x, y, dev, batch=256, steps=max(2, steps // 2), warmup=2, net="ff")
            base = base or res
            out.append({"width": w, "rule": r, **res, "time_vs_bp": _vs_bp(res, base)["time_vs_bp"]})
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def markdown(res: dict) -> str:
    malloc = {True: ", malloc keeps freed memory", False: ", malloc as it is"}.get(res.get("keep_freed_memory"), "")
    lines = [f"device {res['device']}, {res['threads']} threads, torch {res['torch']}{malloc}, batch 50, "
             f"{res['steps_timed']} timed steps per cell; epoch = 1,200 steps (training only)", ""]
    lines += _table(["width", "depth", "rule", "ms/step", "epoch (s)", "time ÷ BP", "peak MB/step", "memory ÷ BP"],
                    [[r["width"], r["depth"], r["rule"], f"{r['ms_per_step']:.2f}", f"{r['epoch_s']:.1f}",
                      f"{r['time_vs_bp']:.2f}", f"{r['peak_mb']:.2f}", f"{r['mem_vs_bp']:.2f}"] for r in res["rows"]])
    if res.get("foton"):
        lines += ["", "FOTON vs BP on FOTON's default net (784-256×(L−1)-10, ReLU, orthogonal, no bias; batch 256; "
                  "FOTON with dropout 0.1, Björck (20 iterations) and 𝔽 refresh every step):", ""]
        lines += _table(["weight layers", "rule", "ms/step", "time ÷ BP", "peak MB/step", "memory ÷ BP"],
                        [[r["layers"], r["rule"], f"{r['ms_per_step']:.1f}", f"{r['time_vs_bp']:.2f}",
                          f"{r['peak_mb']:.2f}", f"{r['mem_vs_bp']:.2f}"] for r in res["foton"]])
    if res.get("ffzero"):
        lines += ["", "FFzero paradigms on FFzero's MLP (784-w-w-w-10, no activation; batch 256, 1 direction; "
                  "FF rules: one step of layer 2, BP rules: one step of the whole net):", ""]
        names = {"bp": "BP+AD", "bp_dd": "BP+DD", "ff_ad": "FF+AD", "ff_dd": "FF+DD"}
        lines += _table(["width", "rule", "ms/step", "time ÷ BP+AD", "peak MB/step"],
                        [[r["width"], names[r["rule"]], f"{r['ms_per_step']:.2f}", f"{r['time_vs_bp']:.2f}",
                          f"{r['peak_mb']:.2f}"] for r in res["ffzero"]])
    if res.get("cnn"):
        lines += ["", "FTP vs BP on FTP's CNN (conv 5×5 → 32, ReLU, max-pool 2, FC → 10, no biases; batch 50; "
                  "PEPITA and DRTP for context):", ""]
        lines += _table(["rule", "ms/step", "time ÷ BP", "peak MB/step", "memory ÷ BP"],
                        [[r["rule"], f"{r['ms_per_step']:.2f}", f"{r['time_vs_bp']:.2f}", f"{r['peak_mb']:.2f}",
                          f"{r['mem_vs_bp']:.2f}"] for r in res["cnn"]])
    if res["full_epoch_s"]:
        lines += ["", "Full MNIST epoch (d=1, w=500, batch 50; training + evaluation of train and test sets; the fastest "
                  "of 3):", ""]
        for k, v in res["full_epoch_s"].items():
            lines.append(f"- {k}: {v:.2f} s — {res['authors_epoch_s'] / v:.1f}× faster than the authors' code "
                         f"({res['authors_epoch_s']} s here)")
    return "\n".join(lines)


def main(quick: bool = False, out: str | None = None) -> int:
    res = run(quick=quick)
    print(markdown(res))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=1) + "\n")
    slow = [r for r in res["rows"] if r["rule"] == "f3" and r["time_vs_bp"] > 1.0]
    if slow:
        print("note: F³ slower than BP per step at " + ", ".join(f"w={r['width']} d={r['depth']}" for r in slow))
    return 0
