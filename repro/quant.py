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
    if scale == "dynamic":
        s = x.abs().max() / q
    elif isinstance(scale, (int, float)) and scale > 0:
        s = torch.tensor(float(scale) / q, dtype=x.dtype, device=x.device)
    else:
        raise ConfigError(f"scale={scale!r} must be 'dynamic' or a positive clipping value")
    if float(s) == 0.0:
        return torch.zeros_like(x)
    v = x / s
    if rounding == "nearest":
        v = torch.round(v)
    else:
        v = torch.floor(v + torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device))
    return torch.clamp(v, -q, q) * s


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
