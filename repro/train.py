"""Training engine: one run = one config dict; every run is cached under a hash of its full config.

A config (plain JSON-able dict)::

    {"dataset": {"name": "mnist", "normalize": "standard", "n_train": None, "n_test": None},
     "model":   {"arch": "mlp", "width": 500, "depth": 1, "act": "tanh", "loss": "bce", ...},
     "rule":    {"name": "f3", "error_info": "delayed_error", ...},
     "optim":   {"name": "adam", "lr": 1.5e-4, ...},
     "epochs": 100, "batch_size": 50, "seed": 1}

Protocol (f3.md §2.10): evaluate the full training and test sets before training (epoch 0) and after
every epoch; loss = per-sample loss summed over outputs, averaged over samples; top-1 error from argmax.

The run store keeps ``<runs>/<key>.json`` (config, per-epoch history, status; small, tracked by git)
and ``<weights>/<key>.pt`` (model and rule tensors; DVC-cached). The JSON is written last and
atomically, so it marks a finished run: a killed sweep leaves no partial record and resumes where
it stopped. An unfinished run saves its state every few minutes (``<weights>/<key>.ckpt``, see ``train``),
so a killed run goes on from its last saved epoch, not from scratch. Non-finite losses end a run as
``diverged``; it is cached like any other result.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as data_mod
from .models import CNN_DEFAULTS, ConfigError, build_model, check_choice, loss_value
from .rules import Batch, make_rule

CACHE_VERSION = 1  # bump when a change alters what a given config computes
DEFAULTS = {
    "dataset": {"name": "mnist", "normalize": "standard", "n_train": None, "n_test": None, "n_val": 0},
    "model": {"arch": "mlp", "width": 500, "depth": 1, "widths": None, "act": "tanh", "loss": "bce", "bias": True,
              "init": "default", "out_width": None, "cnn": None},
    "rule": {"name": "bp"},
    "optim": {"name": "adam", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "milestones": [],
              "gamma": 0.1},
    "epochs": 1,
    "batch_size": 50,
    "seed": 1,
    "align_every": 0,  # measure per-layer cosine(update, BP gradient) every n steps; 0 = off
    "hardware": None,  # low-precision / analog hardware model (repro.quant.Hardware); None = float
}
EVAL_BATCH = 10_000
LAYERWISE_RULES = ("ff",)  # rules whose phases are the model's layers (progress-bar step counts)


def normalize_config(cfg: dict) -> dict:
    """Fill defaults and validate; the result is what the run key is computed from."""
    unknown = set(cfg) - set(DEFAULTS) - {"tags"}
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    out = copy.deepcopy(DEFAULTS)
    for k, v in cfg.items():
        if k == "tags":
            continue
        if k == "hardware":
            if v is not None:
                from .quant import Hardware
                Hardware(v)  # validates
                out[k] = dict(v)
            continue
        if isinstance(DEFAULTS[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"{k} must be a mapping, got {v!r}")
            if k == "rule":
                out[k] = dict(v)
            else:
                bad = set(v) - set(DEFAULTS[k])
                if bad:
                    raise ConfigError(f"unknown key(s) {sorted(bad)} in {k}; allowed: {sorted(DEFAULTS[k])}")
                out[k].update(v)
        else:
            out[k] = v
    for k in ("epochs", "batch_size", "seed", "align_every"):
        if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < (0 if k != "batch_size" else 1):
            raise ConfigError(f"{k}={out[k]!r} must be a {'positive' if k == 'batch_size' else 'non-negative'} integer")
    nv = out["dataset"]["n_val"]
    if not isinstance(nv, int) or isinstance(nv, bool) or nv < 0:
        raise ConfigError(f"dataset.n_val={nv!r} must be a non-negative integer (training samples held out for "
                          "validation; 0 = none)")
    check_choice("optim.name", out["optim"]["name"], ("adam", "sgd"))
    lr = out["optim"]["lr"]
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"optim.lr={lr!r} must be a positive number")
    return out


# Settings added after runs were cached: left out of the key while at their default, so every
# existing run keeps its key (a new setting must not invalidate the run cache).
OMIT_FROM_KEY_IF_DEFAULT = {"align_every": 0, "model.widths": None, "hardware": None, "model.out_width": None,
                            "model.cnn": None, "dataset.n_val": 0}


def run_key(cfg: dict) -> str:
    c = normalize_config(cfg)
    for k, v in OMIT_FROM_KEY_IF_DEFAULT.items():
        *head, last = k.split(".")
        d = c
        for h in head:
            d = d[h]
        if d.get(last) == v:
            d.pop(last)
    blob = json.dumps({"v": CACHE_VERSION, **c}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device={device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...)") from exc
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'")
    return d


def make_optimizer(params, o: dict):
    if o["name"] == "adam":
        # fused Adam: same update, one kernel (2.5x faster on CPU here); deterministic
        opt = torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"], fused=True)
    else:
        opt = torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, o["milestones"], o["gamma"]) if o["milestones"] else None
    return opt, sched


def bp_alignment(model, batch: Batch, masks=None) -> list[float]:
    """Per-layer cosine between the update a rule just wrote into ``.grad`` and the true BP gradient of
    the batch-mean loss, on the same batch, with the same dropout masks and the pre-update weights."""
    ref = copy.deepcopy(model).requires_grad_(True)
    _, hs = ref.forward_all(batch.x, masks)
    g = torch.autograd.grad(loss_value(ref.loss, hs[-1], batch.y), [lin.weight for lin in ref.layers])
    out = []
    for lin, gi in zip(model.layers, g):
        u = lin.weight.grad
        out.append(float("nan") if u is None else float((u * gi).sum() / (u.norm() * gi.norm()).clamp_min(1e-30)))
    return out


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """Loss summed over outputs and averaged over samples; top-1 error (%) for classification."""
    total, wrong = 0.0, 0
    for s in range(0, len(x), EVAL_BATCH):
        out = model(x[s:s + EVAL_BATCH])
        t = y[s:s + EVAL_BATCH]
        total += float(loss_value(model.loss, out, t, reduction="sum"))
        if labels is not None:
            wrong += int((out.argmax(1) != labels[s:s + EVAL_BATCH]).sum())
    res = {"loss": total / len(x)}
    if labels is not None:
        res["error"] = 100.0 * wrong / len(x)
    return res


def load_data(cfg: dict, device) -> data_mod.Data:
    d = cfg["dataset"]
    data = data_mod.load(d["name"], normalize=d["normalize"], n_train=d["n_train"], n_test=d["n_test"])
    return with_validation(data, cfg).to(device)


def with_validation(data: data_mod.Data, cfg: dict) -> data_mod.Data:
    """``data`` with the config's validation split held out (``dataset.n_val`` last training samples; the
    same split for every seed), or as it is when ``n_val`` is 0 or the split is already there."""
    n_val = cfg["dataset"].get("n_val", 0)
    if not n_val or data.x_val is not None:
        return data
    try:
        return data.hold_out(n_val)
    except data_mod.DataError as exc:
        raise ConfigError(f"dataset.{exc}") from exc


@dataclass
class RunResult:
    key: str
    record: dict
    model: torch.nn.Module | None = None


def build(cfg: dict, dev: torch.device, data: data_mod.Data):
    """The model (with its hardware model) and the set-up rule of a normalised config, exactly as
    ``train`` starts them: seeded, so a diagnostic that calls this sees the run's own initial state."""
    torch.manual_seed(cfg["seed"])  # forward init, then the rule's own draws (feedback), then dropout
    model = build_model(cfg["model"], data.n_in, data.n_out).to(dev)
    if model.loss == "bce" and data.task != "classification":
        raise ConfigError("model.loss='bce' needs a classification dataset; use 'mse' for regression")
    if cfg["hardware"] is not None:
        from .quant import Hardware
        model.hw = Hardware(cfg["hardware"])
    rule = make_rule(cfg["rule"])
    if cfg["model"]["out_width"] not in (None, data.n_out) and not hasattr(rule, "evaluate"):
        raise ConfigError(f"model.out_width={cfg['model']['out_width']} differs from the dataset's {data.n_out} "
                          f"outputs; only rules with their own read-out (ff) allow that")
    rule.setup(model, len(data.x_train))
    if hasattr(rule, "init_buffer"):
        rule.init_buffer(data.y_train)
    for p in model.parameters():
        p.requires_grad_(rule.needs_autograd)
    return model, rule


def train_step(model, rule, opt, batch: Batch, params, inspect=None):
    """One training step, in the order every run takes it: the rule writes the update into ``.grad``
    (``inspect(out)`` sees it there, before anything moves: alignment, update sparsity), the optimizer
    steps, the hardware model stores the weights (rounding, write noise), then the rule's post-step work
    (Björck, 𝔽 refresh, error buffers). ``params``: what the optimizer trains. Returns the rule's output."""
    out = rule.step(model, batch)
    if inspect is not None:
        inspect(out)
    opt.step()
    if model.hw is not None:
        model.hw.after_step(params)
    rule.after_step(model, batch, out)
    return out


def checkpoint_seconds() -> float:
    """How often (wall seconds, at epoch ends) a run in a store saves its resumable state;
    ``REPRO_CHECKPOINT_S``, default 120; 0 = never."""
    v = os.environ.get("REPRO_CHECKPOINT_S", "120")
    try:
        s = float(v)
    except ValueError:
        s = -1.0
    if not s >= 0:
        raise ConfigError(f"REPRO_CHECKPOINT_S={v!r} must be a number of seconds >= 0 (0 = no checkpoints)")
    return s


_MALLOC = {"done": False, "set": False}
MALLOC_MMAP_BYTES, MALLOC_TRIM_BYTES = 64 << 20, 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> mallopt parameters


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse (``mallopt``: a fixed mmap threshold of 64 MiB and a
    trim threshold of 1 GiB), once per process; ``REPRO_KEEP_FREED_MEMORY=0`` leaves malloc as it was.

    A CPU step allocates and frees the same few-MB maps every step; with glibc's defaults the freed top
    of the heap goes back to the kernel and comes back as fresh pages, so every large temporary pays page
    faults and zeroing: an FTP CNN step (batch 50, a [50, 32, 24, 24] map) took ≈ 18 ms instead of ≈ 8
    (BP's ≈ 8 instead of ≈ 6.5; one thread, session 37). Only where memory comes from changes — no value
    does; the process keeps its peak heap. Returns whether the setting is in force (False off glibc)."""
    if not _MALLOC["done"]:
        _MALLOC["done"] = True
        if os.environ.get("REPRO_KEEP_FREED_MEMORY", "1") != "0":
            try:
                import ctypes
                libc = ctypes.CDLL("libc.so.6")
                _MALLOC["set"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_BYTES)
                                      and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_BYTES))
            except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): malloc as it is
                pass
    return _MALLOC["set"]


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``, else ``platform.processor()``), kept in a run's record:
    retraining a record on another host can differ in the last bits (README, *Runs*)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The instruction set torch's CPU kernels dispatch to here ("AVX512", "AVX2", "DEFAULT", …): two hosts with
    the same CPU name can differ in it, and with it in a run's low bits (README, *Threads, not denormals*)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older torch
        return "unknown"


def describe_env(env: dict) -> str:
    """Where a run was trained, in a few words: device, the chip's model when recorded, threads, host."""
    bits = [str(env.get("device", "?"))] + [env[k] for k in ("gpu", "cpu", "cpu_capability") if env.get(k)]
    seg = env.get("threads_by_segment") or []
    if len(set(seg)) > 1:  # a resumed run whose segments ran on different (or unknown) thread counts
        bits.append("threads by segment " + "/".join("?" if t is None else str(t) for t in seg))
    elif env.get("threads"):
        bits.append(f"{env['threads']} thread{'s' * (env['threads'] != 1)}")
    if env.get("host"):
        bits.append(f"host {env['host']}")
    return ", ".join(bits)


CHECKPOINT_FORMAT = 1


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path | None, key: str, dev: torch.device) -> dict | None:
    """A run's saved state, or None. It is our own file (the model and rule pickled together, so that a
    rule's references into the model survive), hence ``weights_only=False``; one that does not load or
    belongs to another config is ignored: the run starts from scratch and overwrites it. A checkpoint
    pickles the rule object, so it belongs to the code that wrote it: delete ``*.ckpt`` after changing a
    rule's attributes (run keys change only with ``CACHE_VERSION``)."""
    if path is None or not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location=dev, weights_only=False)
    except Exception:
        return None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or ck.get("key") != key:
        return None
    return ck


def train(cfg: dict, device: str = "auto", data: data_mod.Data | None = None, progress=None,
          checkpoint: str | Path | None = None, checkpoint_every: float | None = None,
          on_epoch=None) -> RunResult:
    """Train one config; returns the record (and the trained model). Does not cache.

    ``checkpoint``: a file for the run's resumable state. If it holds this config's state, training goes
    on from the epoch it reached (model, rule, optimizer, scheduler, shuffling and RNG states, history), so
    the run ends bitwise equal to an uninterrupted one on the same device; it is rewritten at the end of an
    epoch once ``checkpoint_every`` seconds (default ``checkpoint_seconds()``) have passed since the last
    save. Layer-wise rules (FF) are not checkpointed: their per-phase caches of layer inputs are large.

    ``on_epoch(model, row)``: called after each training epoch with the model and that epoch's history row,
    before a diverged run stops — for diagnostics that look inside the net (e.g. weight norms); it must not
    change the model."""
    keep_freed_memory()
    cfg = normalize_config(cfg)
    dev = resolve_device(device)
    data = with_validation(data if data is not None else load_data(cfg, dev), cfg)
    model, rule = build(cfg, dev, data)
    phases = rule.phases(model)
    layerwise = len(phases) > 1  # greedy layer-wise rules: each phase trains one group for `epochs`
    ckpt = Path(checkpoint) if checkpoint is not None and not layerwise else None
    every = checkpoint_seconds() if checkpoint_every is None else float(checkpoint_every)
    key = run_key(cfg)
    ck = _load_checkpoint(ckpt, key, dev)
    if ck is not None:
        model, rule = ck["model"], ck["rule"]
        phases = rule.phases(model)
    if not layerwise:
        opt, sched = make_optimizer(rule.trainable(model), cfg["optim"])
    shuffle = torch.Generator().manual_seed(cfg["seed"])
    rule_eval = getattr(rule, "evaluate", None)

    n, bs = len(data.x_train), cfg["batch_size"]
    history, status, t0 = [], "ok", time.perf_counter()
    resumed_at: list[int] = []
    segment_threads: list[int | None] = []  # thread count of each earlier segment of a resumed run
    step_no, epoch = 0, 0
    if ck is not None:
        opt.load_state_dict(ck["opt"])
        if sched is not None:
            sched.load_state_dict(ck["sched"])
        shuffle.set_state(ck["shuffle"])
        torch.set_rng_state(ck["rng"])
        if dev.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"], dev)
        history, step_no, epoch = ck["history"], ck["step_no"], ck["epoch"]
        resumed_at = ck["resumed_at"] + [epoch]
        # checkpoints written before session 31 did not keep their segments' thread counts: None
        segment_threads = ck.get("segment_threads", [None] * len(ck["resumed_at"])) + [ck.get("threads")]
        t0 -= ck["seconds"]
        if progress is not None and epoch:
            progress(epoch * -(-n // bs))
    last_save = time.perf_counter()

    def save_checkpoint() -> None:
        nonlocal last_save
        _save_checkpoint(ckpt, {
            "format": CHECKPOINT_FORMAT, "key": key, "model": model, "rule": rule, "opt": opt.state_dict(),
            "sched": sched.state_dict() if sched is not None else None, "shuffle": shuffle.get_state(),
            "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "history": history, "step_no": step_no, "epoch": epoch, "resumed_at": resumed_at,
            "segment_threads": segment_threads, "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - t0})
        last_save = time.perf_counter()

    def record_epoch(epoch: int, train_loss: float | None, t_train: float) -> bool:
        ev = rule_eval or evaluate
        model.eval()  # BatchNorm running statistics, no dropout modules (MLPs have neither)
        tr = ev(model, data.x_train, data.y_train, data.labels_train)
        te = ev(model, data.x_test, data.y_test, data.labels_test)
        va = ev(model, data.x_val, data.y_val, data.labels_val) if data.x_val is not None else None
        model.train()
        row = {"epoch": epoch, "train_loss": tr["loss"], "test_loss": te["loss"], "step_loss": train_loss,
               "time_train": t_train}
        if "error" in te:
            row["train_error"], row["test_error"] = tr["error"], te["error"]
        for k in te.keys() - {"loss", "error"}:  # rule-specific metrics, e.g. per-layer errors
            row[f"train_{k}"], row[f"test_{k}"] = tr[k], te[k]
        for k, v in (va or {}).items():  # the validation split's (dataset.n_val), when one is held out
            row[f"val_{k}"] = v
        history.append(row)
        return all(math.isfinite(v) for v in (tr["loss"], te["loss"], train_loss or 0.0))

    if not history:
        record_epoch(0, None, 0.0)
    for phase, group in enumerate(phases):
        if layerwise:
            rule.begin_phase(model, phase, data)
            opt, sched = make_optimizer(group, cfg["optim"])  # a fresh optimizer per layer
        params = group if layerwise else rule.trainable(model)
        for _ in range(epoch if not layerwise else 0, cfg["epochs"]):
            epoch += 1
            ts = time.perf_counter()
            rule.begin_epoch(model, epoch)
            perm = torch.randperm(n, generator=shuffle).to(dev)
            loss_sum = torch.zeros((), device=dev)
            aligns = []
            for s in range(0, n, bs):
                idx = perm[s:s + bs]
                batch = Batch(idx, data.x_train[idx], data.y_train[idx])
                step_no += 1
                measure = cfg["align_every"] and step_no % cfg["align_every"] == 0
                out = train_step(model, rule, opt, batch, params, inspect=(
                    (lambda o: aligns.append(bp_alignment(model, batch, o.extras.get("masks")))) if measure else None))
                loss_sum += out.loss * len(idx)
            if sched is not None:
                sched.step()
            ok = record_epoch(epoch, float(loss_sum) / n, time.perf_counter() - ts)
            if layerwise:
                history[-1]["phase"] = phase
            if aligns:
                history[-1]["align_cos"] = [float(v) for v in torch.tensor(aligns).nanmean(0)]
            if on_epoch is not None:
                on_epoch(model, history[-1])
            if progress is not None:
                progress(-(-n // bs))
            if not ok:
                status = "diverged"
                break
            if ckpt is not None and every > 0 and epoch < cfg["epochs"] and time.perf_counter() - last_save >= every:
                save_checkpoint()
        if status != "ok":
            break
    last = history[-1]
    summary = {"final_test_loss": last["test_loss"], "final_train_loss": last["train_loss"],
               "best_test_loss": min(h["test_loss"] for h in history[1:]) if len(history) > 1 else last["test_loss"],
               "epochs_done": last["epoch"]}
    if "test_error" in last:
        summary["final_test_error"] = last["test_error"]
        summary["best_test_error"] = min(h["test_error"] for h in history[1:]) if len(history) > 1 else last["test_error"]
    for k in ("loss", "error"):  # the validation split's, when one is held out (dataset.n_val)
        if f"val_{k}" in last:
            summary[f"final_val_{k}"] = last[f"val_{k}"]
            summary[f"best_val_{k}"] = min(h[f"val_{k}"] for h in history[1:]) if len(history) > 1 else last[f"val_{k}"]
    record = {"key": key, "config": cfg, "status": status, "summary": summary, "history": history,
              "env": {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "host": platform.node(), "seconds": round(time.perf_counter() - t0, 2)}}
    record["env"].update({"gpu": torch.cuda.get_device_name(dev)} if dev.type == "cuda" else
                         {"cpu": cpu_model(), "cpu_capability": cpu_capability()})
    if resumed_at:  # trained in segments: the epochs it resumed at and each segment's thread count (the last
        # is env.threads; None: a checkpoint from before session 31, which did not keep it)
        record["env"]["resumed_at_epochs"] = resumed_at
        record["env"]["threads_by_segment"] = segment_threads + [torch.get_num_threads()]
    model._repro_rule = rule  # keeps the rule's tensors reachable for saving
    return RunResult(record["key"], record, model)


# ------------------------------------------------------------------------------------------ run store
class RunStore:
    """``runs/<key>.json`` marks a finished run; ``weights/<key>.pt`` holds its tensors."""

    def __init__(self, runs_dir: str | Path, weights_dir: str | Path | None = None,
                 shared: list[tuple[Path, Path]] = ()):
        """``shared``: other stores' (runs, weights) folders. A run missing here but finished there (the
        same config in another figure) is copied in — weights first, the JSON last — not retrained. A
        finished run whose weights that store lacks (a fresh clone: records in git, weights in DVC) is
        copied as its record alone; ``load_weights`` retrains it for its weights only if a figure asks."""
        self.runs = Path(runs_dir)
        self.weights = Path(weights_dir) if weights_dir is not None else self.runs
        self.runs.mkdir(parents=True, exist_ok=True)
        self.weights.mkdir(parents=True, exist_ok=True)
        self.shared = [(Path(r), Path(w)) for r, w in shared]

    def path(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def get(self, cfg: dict) -> dict | None:
        key = run_key(cfg)
        p = self.path(key)
        if not p.is_file():
            for runs, weights in self.shared:
                if (runs / f"{key}.json").is_file():
                    tag = f"{os.getpid()}.tmp"  # per process: two sweeps may copy the same run at once
                    if (weights / f"{key}.pt").is_file():
                        shutil.copyfile(weights / f"{key}.pt", self.weights / f".{key}.pt.{tag}")
                        os.replace(self.weights / f".{key}.pt.{tag}", self.weights / f"{key}.pt")
                    shutil.copyfile(runs / f"{key}.json", self.runs / f".{key}.json.{tag}")
                    os.replace(self.runs / f".{key}.json.{tag}", p)
                    break
            else:
                return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:  # cannot happen with atomic writes; treat as missing
            return None

    def put(self, res: RunResult) -> None:
        self._put_weights(res)
        jtmp = self.runs / f".{res.key}.json.tmp"
        jtmp.write_text(json.dumps(res.record, indent=1, sort_keys=True))
        os.replace(jtmp, self.path(res.key))

    def restore_weights(self, cfg: dict, device: str = "cpu") -> bool:
        """Retrain a run for its weights: same config and seed, on the thread count its record names, so
        on the CPU its history equals the record's bitwise. Returns whether it did; a history that
        differs (another device or library build) is reported in one line, and the new weights are kept
        beside the old record. A config with no record is simply trained and stored."""
        cfg = normalize_config(cfg)
        key = run_key(cfg)
        rec = self.get(cfg)  # may copy the run, weights included, from a shared store
        if (self.weights / f"{key}.pt").is_file():
            return False
        threads = int((rec or {}).get("env", {}).get("threads") or torch.get_num_threads())
        print(f"run {key}: weights missing in {self.weights}; retraining it for them "
              f"({device}, {threads} thread{'s' * (threads != 1)})", flush=True)
        with torch_threads(threads):
            res = train(cfg, device=device)
        if rec is None:
            self.put(res)
            return True
        if history_digits(res.record["history"]) != history_digits(rec["history"]):
            print(f"run {key}: the retrained history differs from the cached record's (trained on "
                  f"{describe_env(rec['env'])}; now on {describe_env(res.record['env'])}); using the new weights",
                  flush=True)
        self._put_weights(res)
        return True

    def _put_weights(self, res: RunResult) -> None:
        model = res.model
        state = {"model": model.state_dict(),
                 "rule": getattr(model, "_repro_rule").state_dict() if hasattr(model, "_repro_rule") else {}}
        wtmp = self.weights / f".{res.key}.pt.{os.getpid()}.tmp"
        torch.save(jsonable_tensors(state), wtmp)
        os.replace(wtmp, self.weights / f"{res.key}.pt")

    def checkpoint_path(self, key: str) -> Path:
        """Where an unfinished run keeps its resumable state (deleted once the run is stored): beside the
        weights, or in ``REPRO_CHECKPOINT_DIR`` (e.g. a folder a lent GPU machine sends back)."""
        d = os.environ.get("REPRO_CHECKPOINT_DIR")
        folder = Path(d) if d else self.weights
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{key}.ckpt"

    def load_weights(self, cfg: dict, device: str = "cpu"):
        """The trained model of a cached run (weights-only load). A run whose weights are missing here
        — a fresh clone has the git-tracked records but not the DVC-cached weights; a lent GPU sends back
        records only — is first retrained for them (``restore_weights``)."""
        cfg = normalize_config(cfg)
        key = run_key(cfg)
        if not (self.weights / f"{key}.pt").is_file():
            self.restore_weights(cfg)
        state = torch.load(self.weights / f"{key}.pt", map_location=device, weights_only=True)
        d = cfg["dataset"]
        e = data_mod.entry(d["name"])
        n_in, n_out = e.n_in, e.n_out
        model = build_model(cfg["model"], n_in, n_out)
        model.load_state_dict(state["model"])
        return model, state["rule"]


def history_digits(history: list[dict]) -> list[dict]:
    """A history without its wall-clock entries: what a bitwise-equal retrain reproduces."""
    return [{k: v for k, v in h.items() if not k.startswith("time")} for h in history]


def jsonable_tensors(state: dict) -> dict:
    return {k: (jsonable_tensors(v) if isinstance(v, dict) else v.detach().cpu().clone()) for k, v in state.items()}


def run_cached(cfg: dict, store: RunStore, device: str = "auto", progress=None) -> dict:
    rec = store.get(cfg)
    if rec is not None:
        return rec
    ckpt = store.checkpoint_path(run_key(cfg))
    res = train(cfg, device=device, progress=progress, checkpoint=ckpt)
    store.put(res)
    ckpt.unlink(missing_ok=True)
    return res.record


def _steps(cfg: dict) -> int:
    c = normalize_config(cfg)
    d = c["dataset"]
    m = c["model"]
    if c["rule"].get("name") not in LAYERWISE_RULES:
        phases = 1
    elif m.get("arch") == "cnn":  # conv blocks, hidden FC layers, output layer
        cnn = {**CNN_DEFAULTS, **(m.get("cnn") or {})}
        phases = len(cnn["channels"]) + len(cnn["fc"]) + 1
    else:
        phases = len(m["widths"]) + 1 if m.get("widths") else m["depth"] + 1
    n = (d["n_train"] or data_mod.entry(d["name"]).n_train) - d["n_val"]
    return phases * c["epochs"] * -(-n // c["batch_size"])


def _work(cfg: dict) -> float:
    """Rough cost of a run for scheduling: optimisation steps × forward FLOPs of one sample (0 if unknown)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        c = normalize_config(cfg)
        e = data_mod.entry(c["dataset"]["name"])
        with torch.device("meta"):
            model = build_model(c["model"], e.n_in, e.n_out)
            x = torch.zeros(2, e.n_in)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(x)
        return float(_steps(cfg)) * fc.get_total_flops()
    except Exception:
        return 0.0


def _die_with_parent() -> None:
    """Worker initializer: on Linux, end this worker when the sweep process is killed."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: workers finish their current run, then the pool shuts down
        pass


@contextmanager
def torch_threads(n: int = 1):
    """Run the block on ``n`` intra-op CPU threads (every sweep worker trains on one), then restore the
    caller's count. A float32 reduction's result depends on how many threads split it, so a diagnostic
    computed inside a notebook (not a cached run) gave different low-order digits at 1 and 2 threads;
    fixing the count keeps its metrics byte-stable whatever the machine's cores or load."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _worker(args):
    cfg, runs, weights, device, threads, queue = args
    torch.set_num_threads(threads)
    store = RunStore(runs, weights)
    rec = run_cached(cfg, store, device, progress=(lambda k: queue.put(k)) if queue is not None else None)
    return rec


def sweep(configs: list[dict], store: RunStore, device: str = "auto", workers: int = 1,
          threads: int | None = None, progress: bool = True, desc: str = "sweep") -> list[dict]:
    """Run every config not already in the store; return all records in order.

    Every run trains on ``threads`` torch threads (default 1), in this process (``workers == 1``, or a single
    pending run) or in one of ``workers`` parallel processes; on CUDA the processes share the card (these small
    nets are bound by kernel launches, not by the GPU's arithmetic). One count for both paths: a float32
    reduction's low bits depend on how many threads split it, so a run's numbers must not depend on how many
    runs were pending; and two one-worker sweeps side by side on 2 cores, each on torch's default 2 threads,
    ran 3-9x slower than on one thread each (README, *Threads, not denormals*).
    The progress bar counts optimisation steps over all pending runs, so its ETA covers the sweep.
    """
    from tqdm.auto import tqdm

    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a positive integer")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads={threads!r} must be a positive integer (torch threads per run)")
    records: list[dict | None] = [store.get(c) for c in configs]
    pending = [i for i, r in enumerate(records) if r is None]
    todo = {}
    for i in pending:  # identical configs in one sweep train once
        todo.setdefault(run_key(configs[i]), i)
    total = sum(_steps(configs[i]) for i in todo.values())
    bar = tqdm(total=total, desc=f"{desc}: {len(todo)} to train, {len(configs) - len(pending)} cached",
               unit="step", disable=not progress or not todo, mininterval=2.0)
    if workers == 1 or len(todo) <= 1:
        with torch_threads(threads or 1):
            for i in todo.values():
                run_cached(configs[i], store, device, progress=bar.update)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        import queue as queue_mod

        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx, initializer=_die_with_parent) as pool:
            q = manager.Queue()
            # longest first, so the last runs left do not keep one worker busy while the others idle
            order = sorted(todo.values(), key=lambda i: -_work(configs[i]))
            futs = [pool.submit(_worker, (configs[i], str(store.runs), str(store.weights), device,
                                          threads or 1, q)) for i in order]
            while not all(f.done() for f in futs):
                try:
                    bar.update(q.get(timeout=1.0))
                except queue_mod.Empty:
                    pass
            for f in futs:
                f.result()  # re-raise a worker's error
    bar.close()
    return [store.get(c) for c in configs]
