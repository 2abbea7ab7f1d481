"""FOTON: Forward-Only Training of Orthogonal Networks (arXiv 2512.20668), foton.md §2.3–2.6, for MLPs.

Two forward passes, no backward pass and no autograd graph. With the "FF matrix" 𝔽 = W_L ⋯ W_1 (C×d0),
the input is modulated as ``x̃ = x − E 𝔽`` (E = softmax(τY) − T for CE, Y − T for MSE) and each hidden
layer's update is ``(h_l − h̃_l)ᵀ h_{l−1} / B`` with the *clean* presynaptic activity; the output layer
gets ``Eᵀ h_{L−1} / B``, the exact BP gradient of the mean CE loss (for MSE, of ½·Σ_outputs (Y − T)²
averaged over the batch: C/2 times PyTorch's mean MSE gradient). For linear nets whose weights have
orthonormal rows (non-increasing widths) this equals BP exactly, because W_k W_kᵀ = I cancels.

After every ``ortho_every`` steps all layers are projected back to (semi-)orthogonal matrices with
Björck iterations (§2.4), then every ``ff_every`` steps 𝔽 is recomputed (0 = frozen at init).
Dropout masks (keep probability ``keep``) are shared by both passes. Build the model with
``init: orthogonal`` and ``bias: false`` as the authors do.

**Convolution / average pooling — OUR RECONSTRUCTION** (foton.md §2.7; the authors' conv module was never
published). On a :class:`~repro.models.CNN` without BatchNorm or biases: 𝔽 (C × d0) is the linear map of
the network with activations replaced by the identity, obtained by forwarding the d0 one-hot basis images;
each conv layer's update is ``conv2d_weight(H_{l−1}, K_l.shape, H_l − H̃_l) / B`` (clean input, activity
difference of its output before pooling), FC layers as above. Björck acts on each kernel reshaped to
[C_out, C_in·k·k]. The operator is exactly row-orthonormal — and FOTON equals BP for linear nets — when
convolutions do not overlap (``stride = kernel``, no padding) with C_out ≤ C_in·k², and 2×2 average pooling
is scaled by 2 (``pool_scale: 2``, P Pᵀ = I). Dropout is not implemented for conv nets (``keep: 1``).
"""
from __future__ import annotations

import torch

from ..models import ConfigError, loss_value
from .base import Batch, Rule, StepOut, dropout_masks, set_grad


@torch.no_grad()
def bjorck(w: torch.Tensor, iters: int = 20, beta: float = 0.5, power_iters: int = 20,
           tol: float = 0.0) -> torch.Tensor:
    """First-order Björck orthonormalisation towards the polar factor U Vᵀ (a wide matrix ends with
    orthonormal rows). The largest singular value comes from power iteration with a fixed start vector,
    so the projection is deterministic and draws nothing from the RNG.

    ``tol`` > 0 stops early, before an iteration, once max|AᵀA − I| < tol (A the tall form): the Gram
    matrix is computed by the iteration anyway, so the check is free. The iteration converges
    quadratically, so a matrix that one SGD step moved off the manifold needs ~4 of the 20 iterations;
    ``tol`` = 0 always runs ``iters`` (the authors' code)."""
    flip = w.shape[0] < w.shape[1]
    a = w.t() if flip else w  # tall: n >= m
    v = torch.ones(a.shape[1], dtype=a.dtype, device=a.device) / a.shape[1] ** 0.5
    for _ in range(power_iters):
        v = a.t() @ (a @ v)
        v = v / v.norm().clamp_min(1e-30)
    s = (a @ v).norm().clamp_min(1e-30)
    # power iteration underestimates σ_max slightly; a 1 % margin keeps every singular value ≤ 1
    a = a / (s * 1.01)
    for _ in range(iters):
        g = a.t() @ a
        if tol > 0 and float((g - torch.eye(g.shape[0], dtype=g.dtype, device=g.device)).abs().max()) < tol:
            break
        a = (1 + beta) * a - beta * a @ g
    return a.t() if flip else a


def check_bjorck_params(params: dict) -> None:
    """One clear error for bad ``ortho_every`` / ``bjorck_iters`` / ``bjorck_tol`` (FOTON, BP+Björck)."""
    for k in ("ortho_every", "bjorck_iters"):
        v = params[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"rule.{k}={v!r} must be a non-negative integer (0 = never)")
    tol = params["bjorck_tol"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise ConfigError(f"rule.bjorck_tol={tol!r} must be a number in [0, 1) (0 = always bjorck_iters)")


@torch.no_grad()
def bjorck_batched(ws: torch.Tensor, iters: int = 20, beta: float = 0.5, power_iters: int = 20,
                   tol: float = 0.0) -> torch.Tensor:
    """:func:`bjorck` on a stack ``[k, n, m]`` of equal-shape matrices: one batched product per iteration
    instead of k, the same arithmetic per matrix (equal to :func:`bjorck` up to rounding). With ``tol`` > 0
    each matrix stops on its own, as in :func:`bjorck` (a converged one is no longer updated).

    Written beside :func:`bjorck`, not under it: routing one matrix through the batched products changes
    the float rounding of FOTON's CPU runs (checked: another history hash), and cached CPU runs must stay
    bitwise reproducible. Equality of the two is tested."""
    flip = ws.shape[1] < ws.shape[2]
    a = ws.transpose(1, 2) if flip else ws  # tall: n >= m
    k, _, m = a.shape
    v = torch.ones(k, m, 1, dtype=a.dtype, device=a.device) / m ** 0.5
    at = a.transpose(1, 2)
    for _ in range(power_iters):
        v = at @ (a @ v)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    s = (a @ v).norm(dim=1, keepdim=True).clamp_min(1e-30)
    a = a / (s * 1.01)
    eye = torch.eye(m, dtype=a.dtype, device=a.device)
    done = torch.zeros(k, 1, 1, dtype=torch.bool, device=a.device)
    for _ in range(iters):
        g = a.transpose(1, 2) @ a
        if tol > 0:
            done = done | ((g - eye).abs().amax(dim=(1, 2), keepdim=True) < tol)
            if bool(done.all()):
                break
        a = torch.where(done, a, (1 + beta) * a - beta * a @ g)
    return a.transpose(1, 2) if flip else a


@torch.no_grad()
def project_all(model, iters: int = 20, tol: float = 0.0, batched: bool | None = None) -> None:
    """Björck-project every weight of an MLP/CNN in place (conv kernels as [c_out, c_in·k·k]).

    ``batched`` (default: on CUDA) projects the equal-shape matrices of a deep MLP together
    (:func:`bjorck_batched`): on a GPU the per-layer loop is bound by kernel launches (≈ 227 ms a step at 50
    layers on an H100 in our benchmark). The CPU keeps the per-layer loop, so CPU runs stay bitwise as
    cached."""
    mats = [lin.weight for lin in list(getattr(model, "convs", ())) + list(model.layers)]
    if batched is None:
        batched = mats[0].is_cuda
    if not batched:
        for w in mats:
            w.copy_(bjorck(w.view(w.shape[0], -1), iters, tol=tol).view_as(w))
        return
    groups: dict[tuple, list] = {}
    for w in mats:
        groups.setdefault(tuple(w.view(w.shape[0], -1).shape), []).append(w)
    for ws in groups.values():
        out = bjorck_batched(torch.stack([w.view(w.shape[0], -1) for w in ws]), iters, tol=tol)
        for w, o in zip(ws, out):
            w.copy_(o.view_as(w))


def ff_matrix(model) -> torch.Tensor:
    """𝔽 = W_L ⋯ W_1 (C × d0); for a CNN, the linearised network applied to the d0 basis images."""
    if len(getattr(model, "convs", ())):
        d0 = model.in_shape[0] * model.in_shape[1] * model.in_shape[2]
        eye = torch.eye(d0, dtype=model.layers[0].weight.dtype, device=model.layers[0].weight.device)
        return cnn_linear(model, eye).t().contiguous()
    f = model.layers[0].weight
    for lin in model.layers[1:]:
        f = lin.weight @ f
    return f.detach().clone()


@torch.no_grad()
def cnn_linear(model, x: torch.Tensor) -> torch.Tensor:
    """The CNN with every activation replaced by the identity (and no dropout): flat x [N, d0] → [N, C]."""
    h = model.image(x)
    for conv in model.convs:
        h = model.pool(conv(h))
    h = h.flatten(1)
    for lin in model.layers:
        h = lin(h)
    return h


class FOTON(Rule):
    name = "foton"
    PARAMS = {"ortho_every": 1, "ff_every": 1, "bjorck_iters": 20, "bjorck_tol": 0.0, "keep": 0.9, "tau": 1.0,
              "low_memory": False}

    def __init__(self, **params):
        super().__init__(**params)
        v = self.params["ff_every"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"rule.ff_every={v!r} must be a non-negative integer (0 = never)")
        check_bjorck_params(self.params)
        if not 0 < self.params["keep"] <= 1:
            raise ConfigError(f"rule.keep={self.params['keep']!r} must be in (0, 1]")

    def setup(self, model, n_train):
        if any(lin.bias is not None for lin in model.layers):
            raise ConfigError("rule 'foton' needs model.bias=false (the authors' bias update is undefined)")
        self.cnn = len(getattr(model, "convs", ())) > 0
        if self.cnn:
            if model.bn or any(c.bias is not None for c in model.convs):
                raise ConfigError("rule 'foton' on a CNN needs model.cnn.bn=false and model.cnn.bias=false")
            if self.params["keep"] < 1.0 or self.params["low_memory"]:
                raise ConfigError("rule 'foton' on a CNN: set rule.keep=1 and rule.low_memory=false "
                                  "(dropout and the low-memory variant are implemented for MLPs only)")
        self.FF = ff_matrix(model)
        self.t = 0

    def masks(self, model, batch_size: int, device) -> list[torch.Tensor] | None:
        return dropout_masks(model, batch_size, self.params["keep"], device)

    def error(self, model, y, t):
        if model.loss == "ce":
            return torch.softmax(self.params["tau"] * y, dim=1) - t
        if model.loss == "mse":
            return y - t
        raise ConfigError(f"rule 'foton' supports model.loss 'ce' or 'mse', not {model.loss!r}")

    def _cnn_step(self, model, batch: Batch) -> StepOut:
        x, t = batch.x, batch.y
        B = x.shape[0]
        ins, _, outs = model.unit_pass(model.image(x))
        e = self.error(model, outs[-1], t)
        _, _, mods = model.unit_pass(model.image(x - e @ self.FF))
        units = model.units
        for k, u in enumerate(units):
            d = e if k == len(units) - 1 else outs[k] - mods[k]
            set_grad(u.weight, model.unit_grad(k, ins[k], d)[0] / B)
        return StepOut(loss_value(model.loss, outs[-1], t), outs[-1], {})

    @torch.no_grad()
    def step(self, model, batch: Batch) -> StepOut:
        if self.cnn:
            return self._cnn_step(model, batch)
        if self.params["low_memory"]:
            return self._step_low_memory(model, batch)
        x, t = batch.x, batch.y
        m = self.masks(model, x.shape[0], x.device)
        _, hs = model.forward_all(x, m)
        e = self.error(model, hs[-1], t)
        _, hm = model.forward_all(x - e @ self.FF, m)
        B = x.shape[0]
        L = len(model.layers)
        for i, lin in enumerate(model.layers):
            if i < L - 1:
                set_grad(lin.weight, (hs[i + 1] - hm[i + 1]).t() @ hs[i] / B)
            else:
                set_grad(lin.weight, e.t() @ hs[i] / B)
        return StepOut(loss_value(model.loss, hs[-1], t), hs[-1], {"masks": m})

    def _layer_mask(self, gen: torch.Generator | None, batch_size: int, n: int, device):
        keep = self.params["keep"]
        if gen is None:
            return None
        return torch.bernoulli(torch.full((batch_size, n), keep, device=device), generator=gen) / keep

    def _step_low_memory(self, model, batch: Batch) -> StepOut:
        """Same update with activation memory independent of depth: pass 1 keeps only the output;
        then the clean and modulated passes run in lockstep, layer by layer, each layer's update formed
        as soon as both activations exist. Dropout masks are regenerated from one per-step seed so
        all three passes share them. Costs one extra forward pass."""
        x, t = batch.x, batch.y
        B, L = x.shape[0], len(model.layers)
        seed = int(torch.randint(0, 2**62, (1,))) if self.params["keep"] < 1.0 else None

        def gen():
            return None if seed is None else torch.Generator(device=x.device).manual_seed(seed)

        g, h = gen(), x
        for i, lin in enumerate(model.layers[:-1]):
            mask = self._layer_mask(g, B, lin.out_features, x.device)
            z = lin(h)
            h = model.act.fn(z if mask is None else z * mask)
        y = model.layers[-1](h)
        e = self.error(model, y, t)
        g, hc, hm = gen(), x, x - e @ self.FF
        for i, lin in enumerate(model.layers):
            if i < L - 1:
                mask = self._layer_mask(g, B, lin.out_features, x.device)
                zc, zm = lin(hc), lin(hm)
                if mask is not None:
                    zc, zm = zc * mask, zm * mask
                nc, nm = model.act.fn(zc), model.act.fn(zm)
                set_grad(lin.weight, (nc - nm).t() @ hc / B)
                hc, hm = nc, nm
            else:
                set_grad(lin.weight, e.t() @ hc / B)
        return StepOut(loss_value(model.loss, y, t), y, {"mask_seed": seed})

    @torch.no_grad()
    def after_step(self, model, batch, out):
        self.t += 1
        p = self.params
        if p["ortho_every"] and self.t % p["ortho_every"] == 0:
            project_all(model, p["bjorck_iters"], p["bjorck_tol"])
        if p["ff_every"] and self.t % p["ff_every"] == 0:
            self.FF = ff_matrix(model)

    def state_dict(self):
        return {"FF": self.FF}
