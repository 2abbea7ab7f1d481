"""Directional-derivative (DD) gradient estimator, ffzero.md §2.6: forward evaluations only.

For a parameter block θ ∈ R^d and loss L, draw K directions uniform on the unit sphere, measure
δ_k = [L(θ + ε u_k) − L(θ − ε u_k)] / (2ε) (a central difference: O(ε²) error), and estimate
ĝ = (d / K) Σ_k δ_k u_k, unbiased because E[u uᵀ] = I/d. Its variance grows like (d/K − 1)‖∇L‖²,
which is why a block per layer (FFzero) beats a block of the whole network (BP+DD).
"""
from __future__ import annotations

from typing import Callable

import torch


def unit_directions(k: int, d: int, generator: torch.Generator | None = None, device=None,
                    dtype=None) -> torch.Tensor:
    u = torch.randn(k, d, generator=generator, device=device, dtype=dtype)
    return u / u.norm(dim=1, keepdim=True)


@torch.no_grad()
def directional_derivative(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                           u: torch.Tensor, eps: float) -> torch.Tensor:
    """Central differences of ``loss_fn`` at ``theta`` along each row of ``u`` [K, d] → [K].
    ``loss_fn`` takes a batch of parameter vectors [K, d] and returns [K] losses (one forward)."""
    return (loss_fn(theta + eps * u) - loss_fn(theta - eps * u)) / (2 * eps)


@torch.no_grad()
def dd_gradient(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, k: int = 1,
                eps: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """ĝ = (d/K) Σ_k δ_k u_k for a flat parameter vector ``theta`` [d]; ``loss_fn`` as above."""
    d = theta.numel()
    u = unit_directions(k, d, generator, theta.device, theta.dtype)
    delta = directional_derivative(loss_fn, theta, u, eps)
    return (d / k) * (delta @ u)


def linear_loss_fn(x: torch.Tensor, d_out: int, loss_of_z: Callable[[torch.Tensor], torch.Tensor],
                   bias: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """Loss of a linear layer as a function of K flat parameter vectors [K, d_out·d_in (+ d_out)],
    evaluated for all K at once (one batched matmul). ``loss_of_z`` maps z [K, B, d_out] → [K]."""
    d_in = x.shape[1]

    def f(thetas: torch.Tensor) -> torch.Tensor:
        w = thetas[:, : d_out * d_in].reshape(-1, d_out, d_in)
        z = torch.einsum("bi,koi->kbo", x, w)
        if bias:
            z = z + thetas[:, d_out * d_in:].unsqueeze(1)
        return loss_of_z(z)
    return f
