"""FFzero pieces (arXiv 2603.24790), ffzero.md §2.2–2.5: fixed class prototypes per layer, the hinge
goodness on cosine similarities, and the layer-vote prediction. The greedy layer-wise training rules
(FF+AD, FF+DD) build on these (issue #4)."""
from __future__ import annotations

import math

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


CHUNK_ELEMS = 2 ** 26  # floats per chunk of a full-set pass (256 MB in float32)


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


def regression_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """FFzero regression (ffzero.md §2.8): mean squared error between the cosine to the antipodal
    prototype and the target in [−1, 1]. ``s`` [..., B, 1] (or [..., B]) and ``t`` [B] → [...]."""
    if s.shape[-1] == 1 and s.dim() >= 2 and s.shape[-2] == t.shape[0]:
        s = s[..., 0]
    return ((s - t) ** 2).mean(-1)


class FF(Rule):
    """Greedy layer-wise prototype learning (ffzero.md §2.1–2.6): one phase per layer; layer k sees the
    cached outputs of layers < k (computed once per phase, no graph crosses layers) and minimises a local
    loss of its own output against its own fixed prototypes. ``estimator``: ``ad`` (FF+AD, autograd of
    the local loss) or ``dd`` (FF+DD = FFzero: directional derivatives, forward passes only; the K
    directions are evaluated in one batched forward). Prediction: vote over all layers.

    - MLP layers: goodness of the raw linear output z = Wx + b; the next layer receives act(z) (identity
      in the authors' MLP, §6 Q1). Classification: hinge goodness on cosines to C simplex prototypes;
      regression (model loss ``mse``): MSE between cos(z, p) and the target for one antipodal prototype p
      (§2.8; the last layer is 10 wide, ``model.out_width``), per-layer R², no vote.
    - CNN conv blocks (:class:`~repro.models.CNN`): goodness on a = BN(conv(x)), per output channel j
      through a fixed random projection R_j (H'W' → ``ref_dim``, torch's default Linear init, never
      trained) against channel j's own simplex prototypes; a conv layer predicts argmax_c Σ_j S_j[:, c];
      the next block receives dropout(pool(act(a))). DD: one block per channel, [kernel_j, β_j] (the clean
      version of §6 Q3: β accumulated, γ kept at its init); all channels are perturbed in the same two
      forward passes (channel j's loss depends on channel j's parameters only — BatchNorm is per
      channel — so this equals updating the channels one after another). FF+AD trains kernel, γ and β.
      Layer inputs are cached with BatchNorm in eval mode (running statistics), as at test time (§6 Q4).
    """

    name = "ff"
    PARAMS = {"estimator": "ad", "margin": 0.3, "directions": 1, "eps": 1e-3, "ref_dim": 10}

    def __init__(self, **params):
        super().__init__(**params)
        check_choice("rule.estimator", self.params["estimator"], ("ad", "dd"))
        self.needs_autograd = self.params["estimator"] == "ad"

    # -- structure ---------------------------------------------------------------------------------
    @staticmethod
    def n_conv(model) -> int:
        return len(getattr(model, "convs", ()))

    def setup(self, model, n_train):
        self.regression = model.loss == "mse"
        nc = self.n_conv(model)
        c = model.sizes[-1]
        if self.regression and nc:
            raise ConfigError("rule 'ff': regression is implemented for MLPs only (model.arch='mlp')")
        if not self.regression and min(model.sizes[1:]) < c:
            raise ConfigError(f"rule 'ff' needs every layer width >= the number of classes ({c}); sizes {model.sizes}")
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # from the run's seed
        dev = model.layers[0].weight.device
        r = self.params["ref_dim"]
        self.R, self.Pc = [], []  # conv blocks: projections [c, H'W', r] and prototypes [c, C, r]
        for i, conv in enumerate(getattr(model, "convs", ())):
            if r < c:
                raise ConfigError(f"rule.ref_dim={r} must be >= the number of classes ({c})")
            hw = model.spatial[i][0] * model.spatial[i][1]
            bound = 1.0 / hw ** 0.5  # torch's default Linear(hw, r) weight init: U(−1/√hw, 1/√hw)
            self.R.append(((torch.rand(conv.out_channels, hw, r, generator=gen) * 2 - 1) * bound).to(dev))
            self.Pc.append(torch.stack([simplex_prototypes(c, r, gen) for _ in range(conv.out_channels)]).to(dev))
        if self.regression:
            self.P = [antipodal_prototype(d, gen).view(1, -1).to(dev) for d in model.sizes[1:]]
        else:
            self.P = [simplex_prototypes(c, d, gen).to(dev) for d in model.sizes[1:]]
        self.k = 0
        self.cache = None

    def state_dict(self):
        out = {f"P{i}": p for i, p in enumerate(self.P)}
        out.update({f"R{i}": r for i, r in enumerate(self.R)})
        out.update({f"Pc{i}": p for i, p in enumerate(self.Pc)})
        return out

    def phases(self, model):
        convs = [list(conv.parameters()) + list(bn.parameters()) for conv, bn in
                 zip(getattr(model, "convs", ()), getattr(model, "bns", ()))]
        return convs + [list(lin.parameters()) for lin in model.layers]

    def unit_next(self, model, k: int, h: torch.Tensor) -> torch.Tensor:
        """What unit k passes on (its input ``h`` in the unit's own layout)."""
        nc = self.n_conv(model)
        if k < nc:
            out = model.conv_out(k, model.conv_pre(k, h))
            return out.flatten(1) if k == nc - 1 else out
        act = model.act if nc == 0 else model.fc_act
        return act.fn(model.layers[k - nc](h))

    def chunk_rows(self, model) -> int:
        """Rows per chunk when a whole set goes through the net (caching, evaluation): the largest unit
        output stays under ``CHUNK_ELEMS`` floats (an MLP takes MNIST in one chunk; a c = 64 CNN's conv
        maps for 60k images would need 11 GB at once)."""
        per_row = max([int(math.prod(getattr(model, "in_shape", (model.sizes[0],))))] +
                      [c.out_channels * h * w for c, (h, w) in zip(getattr(model, "convs", ()),
                                                                   getattr(model, "spatial", ()))] +
                      [lin.out_features for lin in model.layers])
        return max(1, CHUNK_ELEMS // per_row)

    @torch.no_grad()
    def features(self, model, x: torch.Tensor, upto: int) -> torch.Tensor:
        """What unit ``upto`` receives: the outputs of the (frozen) units below, BatchNorm in eval mode."""
        was = model.training
        model.eval()
        outs, rows = [], self.chunk_rows(model)
        for s in range(0, len(x), rows):
            h = model.image(x[s:s + rows]) if self.n_conv(model) else x[s:s + rows]
            for k in range(upto):
                h = self.unit_next(model, k, h)
            outs.append(h)
        model.train(was)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def begin_phase(self, model, phase, data):
        self.k = phase
        self.cache = self.features(model, data.x_train, phase)

    # -- goodness ------------------------------------------------------------------------------------
    def conv_sims(self, a: torch.Tensor, k: int) -> torch.Tensor:
        """Per-channel similarities [..., B, c, C] of a conv block's output a [..., B, c, H', W']."""
        proj = torch.einsum("...bcs,csr->...bcr", a.flatten(-2), self.R[k])
        return torch.einsum("...bcr,cnr->...bcn", torch.nn.functional.normalize(proj, dim=-1), self.Pc[k])

    def local_loss(self, z: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
        """Loss of FC layer k's raw output z [..., B, d]: hinge goodness (classification, ``target``
        labels) or the regression MSE (``target`` values in [−1, 1])."""
        s = similarities(z, self.P[k])
        if self.regression:
            return regression_loss(s, target)
        return hinge_goodness_loss(s, target, self.params["margin"])

    def conv_losses(self, a: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
        """Per-channel hinge losses [..., c] of a conv block's output a [..., B, c, H', W']."""
        s = self.conv_sims(a, k).transpose(-3, -2)  # [..., c, B, C]
        return hinge_goodness_loss(s, labels, self.params["margin"])

    def targets(self, batch: Batch) -> torch.Tensor:
        return batch.y[:, 0] if self.regression else batch.y.argmax(1)

    # -- training --------------------------------------------------------------------------------------
    def step(self, model, batch: Batch) -> StepOut:
        x = self.cache[batch.idx]
        t = self.targets(batch)
        nc = self.n_conv(model)
        if self.k < nc:
            return self._conv_step(model, x, t)
        k = self.k - nc
        lin = model.layers[k]
        params = list(lin.parameters())
        if self.params["estimator"] == "ad":
            with torch.enable_grad():
                z = lin(x)
                loss = self.local_loss(z, t, k)
                grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                set_grad(p, g)
        else:
            with torch.no_grad():
                theta = torch.cat([p.reshape(-1) for p in params])
                f = linear_loss_fn(x, lin.out_features, lambda zz: self.local_loss(zz, t, k),
                                   bias=lin.bias is not None)
                g = dd_gradient(f, theta, self.params["directions"], self.params["eps"])
                i = 0
                for p in params:
                    set_grad(p, g[i:i + p.numel()].view_as(p))
                    i += p.numel()
                z = lin(x)
                loss = self.local_loss(z, t, k)
        return StepOut(loss.detach() if self.regression else loss.detach() / len(x), z.detach())

    def _conv_step(self, model, x, labels) -> StepOut:
        k = self.k
        conv, bn = model.convs[k], model.bns[k]
        if self.params["estimator"] == "ad":
            params = list(conv.parameters()) + list(bn.parameters())
            with torch.enable_grad():
                a = model.conv_pre(k, x)
                loss = self.conv_losses(a, labels, k).sum()
                grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                set_grad(p, g)
            return StepOut(loss.detach() / len(x), a.detach())
        with torch.no_grad():
            has_bn = isinstance(bn, torch.nn.BatchNorm2d)
            shift = bn.bias if has_bn else conv.bias  # the channel's additive parameter, if any
            w = conv.weight
            c = w.shape[0]
            d = w[0].numel() + (1 if shift is not None else 0)
            K, eps = self.params["directions"], self.params["eps"]

            def losses(wp, sp):
                a = torch.nn.functional.conv2d(x, wp, None if has_bn else sp, padding=conv.padding)
                if has_bn:
                    a = torch.nn.functional.batch_norm(a, None, None, bn.weight, sp, True, 0.0, bn.eps)
                return self.conv_losses(a, labels, k)  # [c]

            g = torch.zeros(c, d, device=w.device, dtype=w.dtype)
            for _ in range(K):
                u = torch.randn(c, d, device=w.device, dtype=w.dtype)
                u = u / u.norm(dim=1, keepdim=True)
                uw = u[:, :w[0].numel()].view_as(w)
                us = u[:, -1] if shift is not None else None
                lp = losses(w + eps * uw, None if shift is None else shift + eps * us)
                lm = losses(w - eps * uw, None if shift is None else shift - eps * us)
                g += ((lp - lm) / (2 * eps)).unsqueeze(1) * u
            g *= d / K
            set_grad(w, g[:, :w[0].numel()].view_as(w))
            if shift is not None:
                set_grad(shift, g[:, -1])
            if has_bn:
                bn.weight.grad = None  # γ is not part of the DD block (§6 Q3): the optimizer skips it
            a = model.conv_pre(k, x)  # the logged loss; updates BatchNorm's running statistics
            loss = self.conv_losses(a, labels, k).sum()
        return StepOut(loss / len(x), a)

    # -- prediction ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, x, y, labels) -> dict:
        """Classification: vote error over all layers (the headline), per-layer errors, and the current
        layer's loss. Regression: the last layer's MSE (the loss), per-layer R² (no vote). In chunks
        (:meth:`chunk_rows`); the losses are sums over samples, so chunking does not change them."""
        nc, n_fc = self.n_conv(model), len(model.layers)
        t_all = y[:, 0] if self.regression else labels
        preds, loss, sq = [[] for _ in range(nc + n_fc)], 0.0, [0.0] * n_fc
        rows = self.chunk_rows(model)
        for s0 in range(0, len(x), rows):
            xs, ts = x[s0:s0 + rows], t_all[s0:s0 + rows]
            h = model.image(xs) if nc else xs
            for k in range(nc + n_fc):
                if k < nc:
                    a = model.conv_pre(k, h)
                    preds[k].append(self.conv_sims(a, k).sum(1).argmax(1))
                    if k == self.k and not self.regression:
                        loss += float(self.conv_losses(a, ts, k).sum())
                    h = model.conv_out(k, a)
                    if k == nc - 1:
                        h = h.flatten(1)
                    continue
                z = model.layers[k - nc](h)
                sim = similarities(z, self.P[k - nc])
                if self.regression:
                    sq[k - nc] += float(regression_loss(sim, ts)) * (len(xs) / len(x))  # ×1.0 in one chunk
                else:
                    preds[k].append(sim.argmax(1))
                    if k == self.k:
                        loss += float(hinge_goodness_loss(sim, ts, self.params["margin"]))
                h = (model.act if nc == 0 else model.fc_act).fn(z)
        if self.regression:
            var = float(t_all.var(unbiased=False))
            return {"loss": sq[-1], "layer_r2": [1.0 - m / var for m in sq]}
        preds = [torch.cat(p) for p in preds]
        vote = layer_vote(preds, self.P[-1].shape[0])
        errs = [100.0 * float((p != labels).float().mean()) for p in preds]
        return {"loss": loss / len(x), "error": 100.0 * float((vote != labels).float().mean()), "layer_errors": errs}


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
