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


# ------------------------------------------------------------------------------------------- rules
from ..models import ConfigError, check_choice, loss_value  # noqa: E402
from .base import Batch, Rule, StepOut, set_grad  # noqa: E402
from .dd import dd_gradient, linear_loss_fn  # noqa: E402


class FF(Rule):
    """Greedy layer-wise prototype learning (ffzero.md §2.1–2.6): one phase per layer; layer k sees the
    cached outputs of layers < k (computed once per phase, no graph crosses layers) and minimises the
    hinge goodness of its raw output against its own fixed prototypes. ``estimator``: ``ad`` (FF+AD,
    autograd of the local loss) or ``dd`` (FF+DD = FFzero: directional derivatives, forward passes only;
    the K directions are evaluated in one batched forward). Prediction: vote over all layers."""

    name = "ff"
    PARAMS = {"estimator": "ad", "margin": 0.3, "directions": 1, "eps": 1e-3}

    def __init__(self, **params):
        super().__init__(**params)
        check_choice("rule.estimator", self.params["estimator"], ("ad", "dd"))
        self.needs_autograd = self.params["estimator"] == "ad"

    def setup(self, model, n_train):
        c = model.sizes[-1]
        if min(model.sizes[1:]) < c:
            raise ConfigError(f"rule 'ff' needs every layer width >= the number of classes ({c}); sizes {model.sizes}")
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # from the run's seed
        dev = model.layers[0].weight.device
        self.P = [simplex_prototypes(c, d, gen).to(dev) for d in model.sizes[1:]]
        self.k = 0
        self.cache = None

    def phases(self, model):
        return [list(lin.parameters()) for lin in model.layers]

    @torch.no_grad()
    def features(self, model, x: torch.Tensor, upto: int) -> torch.Tensor:
        """What layer ``upto`` receives: the (activation of the) raw linear outputs of the layers below."""
        h = x
        for lin in model.layers[:upto]:
            h = model.act.fn(lin(h))
        return h

    def begin_phase(self, model, phase, data):
        self.k = phase
        self.cache = self.features(model, data.x_train, phase)

    def local_loss(self, z: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
        return hinge_goodness_loss(similarities(z, self.P[k]), labels, self.params["margin"])

    def step(self, model, batch: Batch) -> StepOut:
        x = self.cache[batch.idx]
        labels = batch.y.argmax(1)
        lin = model.layers[self.k]
        params = list(lin.parameters())
        if self.params["estimator"] == "ad":
            with torch.enable_grad():
                z = lin(x)
                loss = self.local_loss(z, labels, self.k)
                grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                set_grad(p, g)
        else:
            with torch.no_grad():
                theta = torch.cat([p.reshape(-1) for p in params])
                f = linear_loss_fn(x, lin.out_features, lambda zz: self.local_loss(zz, labels, self.k),
                                   bias=lin.bias is not None)
                g = dd_gradient(f, theta, self.params["directions"], self.params["eps"])
                i = 0
                for p in params:
                    set_grad(p, g[i:i + p.numel()].view_as(p))
                    i += p.numel()
                z = lin(x)
                loss = self.local_loss(z, labels, self.k)
        return StepOut(loss.detach() / len(x), z.detach())

    @torch.no_grad()
    def evaluate(self, model, x, y, labels) -> dict:
        """Vote error over all layers (the headline), per-layer errors, and the current layer's loss."""
        preds, h, loss = [], x, 0.0
        for k, lin in enumerate(model.layers):
            z = lin(h)
            s = similarities(z, self.P[k])
            preds.append(s.argmax(1))
            if k == self.k:
                loss = float(hinge_goodness_loss(s, labels, self.params["margin"])) / len(x)
            h = model.act.fn(z)
        vote = layer_vote(preds, self.P[0].shape[0])
        errs = [100.0 * float((p != labels).float().mean()) for p in preds]
        return {"loss": loss, "error": 100.0 * float((vote != labels).float().mean()), "layer_errors": errs}


class BPDD(Rule):
    """BP+DD (ffzero.md §2.9): the global loss of the whole network, its gradient estimated by
    directional derivatives over *all* parameters at once (one shared random direction per draw)."""

    name = "bp_dd"
    PARAMS = {"directions": 1, "eps": 1e-3}

    def step(self, model, batch: Batch) -> StepOut:
        from torch.func import functional_call
        names = [n for n, _ in model.named_parameters()]
        params = [p for _, p in model.named_parameters()]
        shapes = [p.shape for p in params]
        with torch.no_grad():
            theta = torch.cat([p.reshape(-1) for p in params])

            def unflat(v):
                out, i = {}, 0
                for n, s in zip(names, shapes):
                    k = int(torch.Size(s).numel())
                    out[n] = v[i:i + k].view(s)
                    i += k
                return out

            def f(thetas):
                return torch.stack([loss_value(model.loss, functional_call(model, unflat(t), (batch.x,)), batch.y)
                                    for t in thetas])
            g = dd_gradient(f, theta, self.params["directions"], self.params["eps"])
            i = 0
            for p in params:
                set_grad(p, g[i:i + p.numel()].view_as(p))
                i += p.numel()
            y = model(batch.x)
        return StepOut(loss_value(model.loss, y, batch.y), y)
