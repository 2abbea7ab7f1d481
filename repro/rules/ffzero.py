"""FFzero pieces (arXiv 2603.24790), ffzero.md §2.2–2.5: fixed class prototypes per layer, the hinge
goodness on cosine similarities, and the layer-vote prediction. The greedy layer-wise training rules
(FF+AD, FF+DD) build on these (issue #4)."""
from __future__ import annotations

import torch


def haar_rotation(d: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """A Haar-random rotation (QR of a Gaussian matrix, columns sign-fixed, det = +1)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def simplex_prototypes(c: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """C unit vectors in R^d (d ≥ C) with pairwise cosine −1/(C−1), randomly rotated: [C, d]."""
    if d < c:
        raise ValueError(f"prototype dimension d={d} must be >= number of classes C={c}")
    e = torch.zeros(c, d, dtype=torch.float64)
    e[:, :c] = torch.eye(c, dtype=torch.float64)
    s = e - e.mean(0)
    s = s / s.norm(dim=1, keepdim=True)
    return (s @ haar_rotation(d, generator)).float()


def antipodal_prototype(d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Regression: one random unit vector p; +p encodes y = +1 and −p encodes y = −1."""
    p = torch.randn(d, generator=generator)
    return p / p.norm()


def similarities(z: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """cos(z_i, p_c): [..., B, d] × [C, d] → [..., B, C]."""
    return torch.nn.functional.normalize(z, dim=-1) @ protos.t()


def hinge_goodness_loss(s: torch.Tensor, y: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Σ_i Σ_c max(0, m + s_ic − s_{i,y_i}) (summed over batch and classes, true class included):
    [..., B, C] similarities and [B] labels → [...] losses."""
    s_true = s.gather(-1, y.view(*([1] * (s.dim() - 2)), -1, 1).expand(*s.shape[:-1], 1))
    return torch.relu(margin + s - s_true).sum(dim=(-2, -1))


def layer_vote(preds: list[torch.Tensor], n_classes: int) -> torch.Tensor:
    """Majority vote over per-layer predictions; ties go to the tied class whose supporting layers
    have the largest sum of (1-based) layer indices, then to the smallest class index."""
    p = torch.stack(preds)  # [L, B]
    L, B = p.shape
    votes = torch.zeros(B, n_classes, dtype=torch.long, device=p.device)
    weight = torch.zeros(B, n_classes, dtype=torch.long, device=p.device)
    for l in range(L):
        votes.scatter_add_(1, p[l].view(-1, 1), torch.ones(B, 1, dtype=torch.long, device=p.device))
        weight.scatter_add_(1, p[l].view(-1, 1), torch.full((B, 1), l + 1, dtype=torch.long, device=p.device))
    # lexicographic: votes first, then the index sum; argmax returns the smallest class on a full tie
    score = votes * (L * (L + 1) // 2 + 1) + weight
    return score.argmax(1)
