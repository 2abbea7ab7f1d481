"""Low-precision and analog-hardware models (ftp.md §3.2, our protocol — the FTP paper's is unknown).

``quantize``: symmetric per-tensor fixed point, Q_b(x) = s·clip(round(x/s), −q, q) with q = 2^{b−1} − 1
and s = max|x|/q (``scale="dynamic"``, per call) or s = clip/q for a fixed clipping value; rounding to
nearest or stochastic (floor(x/s + U[0, 1)), unbiased within the range). b ≥ 32 means float (identity).
``write_noise`` adds N(0, (κ·max|W|)²) on every update (programming error); ``read_noise`` multiplies
by (1 + N(0, ρ²)) per forward pass. Wiring these into training (weights after each step, activations of
every pass, learning signals) is the quantised-training work of issue #5.
"""
from __future__ import annotations

import torch

from .models import ConfigError


def quantize(x: torch.Tensor, bits: int, rounding: str = "nearest", scale: str | float = "dynamic",
             generator: torch.Generator | None = None) -> torch.Tensor:
    if not isinstance(bits, int) or bits < 2:
        raise ConfigError(f"bits={bits!r} must be an integer >= 2 (32 or more = float)")
    if rounding not in ("nearest", "stochastic"):
        raise ConfigError(f"rounding={rounding!r} is not allowed; choose 'nearest' or 'stochastic'")
    if bits >= 32:
        return x
    q = 2 ** (bits - 1) - 1
    x = x.detach()  # rounding passes no gradient (Hardware.act's straight-through estimator is explicit)
    if scale == "dynamic":
        lo, hi = torch.aminmax(x)  # max|x| in one pass and no |x| tensor: the same number as x.abs().max()
        s = torch.maximum(-lo, hi) / q
    elif isinstance(scale, (int, float)) and scale > 0:
        s = torch.tensor(float(scale) / q, dtype=x.dtype, device=x.device)
    else:
        raise ConfigError(f"scale={scale!r} must be 'dynamic' or a positive clipping value")
    # One new tensor, then in place: the same operations in the same order as s·clip(round(x/s)), so the
    # same bits, without a fresh weight-sized allocation per operation (on the CPU each costs page faults).
    if rounding == "nearest":
        # No host round trip (a CUDA sync per call): s = 0 only when x is all zeros, which round to zeros
        # anyway, so dividing by 1 there gives the same zeros; for s != 0 this is x / s, bit for bit.
        v = torch.div(x, torch.where(s == 0, torch.ones_like(s), s)).round_()
    else:
        if float(s) == 0.0:  # kept on the host: an all-zero tensor draws no random numbers (runs' RNG streams)
            return torch.zeros_like(x)
        r = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        v = torch.div(x, s).add_(r).floor_()  # floor(x/s + U)
    return v.clamp_(-q, q).mul_(s)


def write_noise(w: torch.Tensor, kappa: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """W + N(0, (κ·max|W|)²), elementwise: a programming error on every update."""
    if kappa == 0:
        return w
    return w + kappa * w.abs().max() * torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device)


def read_noise(w: torch.Tensor, rho: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """W ⊙ (1 + N(0, ρ²)), freshly drawn for each forward pass."""
    if rho == 0:
        return w
    return w * (1 + rho * torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device))


SIGNAL_KINDS = ("correction", "targets", "errors")
"""What ``hardware.signals`` can round, by name (``true`` = all of them):

- ``correction``: the output error as it is sent back towards the input — FTP's first-target correction
  (ψ(yG) − ψ(ŷG), or ψ(tG) − ψ(ŷG) for the output-step reading), PEPITA's output error e;
- ``targets``: FTP's layer targets τ_l, held between its two passes (MLPs);
- ``errors``: the per-layer error a weight update is built from — BP's back-propagated errors, FTP's local
  errors h − τ, PEPITA's activity differences h − h̃, the projected feedback e·B of DFA/DRTP/F³."""

HARDWARE_DEFAULTS = {"bits": 32, "weights": False, "activations": False, "signals": False,
                     "weight_rounding": "stochastic", "write_noise": 0.0, "read_noise": 0.0, "master_copy": False}


class Hardware:
    """A run's hardware model (config key ``hardware``), applied identically whatever the rule:

    - ``weights``: after every optimizer step the trained weights are stored quantised (stochastic
      rounding by default; no float master copy), then ``write_noise`` (κ) is added;
    - ``master_copy`` (our variant, off by default; needs ``weights`` with bits < 32, or ``write_noise``): a
      float copy of every trained tensor is kept beside the stored one, as mixed-precision training keeps one:
      each step's update (the tensor after the optimizer step minus what was stored) is added to the copy, and
      the copy, rounded as above, is what is stored; write noise then lands on the stored tensor only (each
      write programs the copy afresh, so programming errors do not add up over steps). Rounding and write
      noise then no longer accumulate in the weights (README #5: why BP collapses at ≤ 4 bits, and under
      write noise, without one). The copies belong to
      this object, so they travel with the model in a checkpoint; another group of trained tensors (a layer-wise
      rule's next phase) starts its own copy from the tensors as they are;
    - ``activations``: every hidden activation of every forward pass is rounded to the grid (with a
      straight-through gradient when autograd is on); ``read_noise`` (ρ) perturbs W in every pass;
    - ``signals``: learning signals are rounded — ``true`` for every kind in :data:`SIGNAL_KINDS`
      (BP's back-propagated errors at every hidden layer, and each forward-only rule's own signals: FTP's
      correction, targets and local errors; PEPITA's error and activity differences; the projected
      feedback of DFA/DRTP/F³), or a list of kinds to round only those (an ablation: which rounded
      signal breaks a rule)."""

    def __init__(self, cfg: dict):
        unknown = set(cfg) - set(HARDWARE_DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown hardware key(s) {sorted(unknown)}; allowed: {sorted(HARDWARE_DEFAULTS)}")
        c = {**HARDWARE_DEFAULTS, **cfg}
        quantize(torch.zeros(1), c["bits"], c["weight_rounding"])  # validates bits and rounding
        if not isinstance(c["master_copy"], bool):
            raise ConfigError(f"hardware.master_copy={c['master_copy']!r} must be true or false")
        for k in ("write_noise", "read_noise"):
            if not isinstance(c[k], (int, float)) or c[k] < 0:
                raise ConfigError(f"hardware.{k}={c[k]!r} must be a non-negative number")
        if c["master_copy"] and not ((c["weights"] and c["bits"] < 32) or c["write_noise"] > 0):
            raise ConfigError("hardware.master_copy=true needs weights stored rounded (hardware.weights=true, "
                              "bits < 32) or written with noise (hardware.write_noise > 0): a float copy of "
                              "weights stored exactly would be the weights themselves")
        sig = c["signals"]
        if isinstance(sig, bool):
            self.signals = frozenset(SIGNAL_KINDS if sig else ())
        elif isinstance(sig, (list, tuple)) and all(isinstance(k, str) for k in sig) \
                and set(sig) <= set(SIGNAL_KINDS):
            self.signals = frozenset(sig)
        else:
            raise ConfigError(f"hardware.signals={sig!r} must be true, false or a list of {list(SIGNAL_KINDS)}")
        self.cfg = c
        self.bits = c["bits"]
        self._master: list[torch.Tensor] | None = None  # master_copy: the float copies, in ``params`` order
        self._stored: list[torch.Tensor] | None = None  # ... and what was stored after the last step
        self._ids: list[int] | None = None  # ... of which tensors (their ids; None right after unpickling)

    def q(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.bits, "nearest")

    def act(self, h: torch.Tensor) -> torch.Tensor:
        if not self.cfg["activations"] or self.bits >= 32:
            return h
        if h.requires_grad:  # straight-through estimator
            return h + (self.q(h.detach()) - h).detach()
        return self.q(h)

    def signal(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        """A learning signal of ``kind`` (one of :data:`SIGNAL_KINDS`), rounded when that kind is."""
        if kind not in SIGNAL_KINDS:
            raise ValueError(f"signal kind {kind!r} is not one of {SIGNAL_KINDS}")
        return self.q(t) if kind in self.signals else t

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """The weight as one forward pass reads it (read noise)."""
        return read_noise(w, self.cfg["read_noise"]) if self.cfg["read_noise"] else w

    @torch.no_grad()
    def after_step(self, params) -> None:
        params = list(params)
        master = self.cfg["master_copy"]  # validated: the stored weights are rounded or written with noise
        if master:
            ids = [id(p) for p in params]
            if self._master is None or (self._ids is not None and ids != self._ids):
                # first step (the weights were float, the init, until this update), or another group of tensors
                # (a layer-wise rule's next phase): the copy starts from the tensors as they are now
                self._master = [p.detach().clone() for p in params]
            else:  # add this step's update (the tensor now minus what was stored) to the float copy
                for p, m, s in zip(params, self._master, self._stored):
                    m.add_(p - s)
                    p.copy_(m)
        for p in params:
            if self.cfg["weights"] and self.bits < 32:
                p.copy_(quantize(p, self.bits, self.cfg["weight_rounding"]))
            if self.cfg["write_noise"]:
                p.copy_(write_noise(p, self.cfg["write_noise"]))
        if master:
            self._stored = [p.detach().clone() for p in params]
            self._ids = ids

    def __getstate__(self) -> dict:
        # a checkpoint: the tensors' ids do not survive unpickling; the next step adopts the resumed model's
        return {**self.__dict__, "_ids": None}

    def __setstate__(self, state: dict) -> None:
        # a checkpoint written before a setting existed (e.g. master_copy, session 31): its default, which is
        # what that run trained with
        self.__dict__.update({"_master": None, "_stored": None, "_ids": None, **state})
        self.cfg = {**HARDWARE_DEFAULTS, **self.cfg}
