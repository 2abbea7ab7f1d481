"""Models and losses shared by every learning rule.

The MLP is a plain stack of ``nn.Linear`` layers with a hidden activation and an output activation.
Rules that do not use autograd call :meth:`MLP.forward_all` under ``torch.no_grad`` and use
:data:`ACTIVATIONS` for the local derivative (written in terms of the activation's output).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight


class ConfigError(ValueError):
    """A bad parameter; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class Activation:
    fn: Callable[[torch.Tensor], torch.Tensor]
    # derivative as a function of (pre-activation z, output h); rules pass both
    grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# module-level functions, not lambdas: a model pickles with its activation (run checkpoints)
def _tanh_grad(z, h):
    return 1.0 - h * h


def _relu_grad(z, h):
    return (z > 0).to(h.dtype)


def _sigmoid_grad(z, h):
    return h * (1.0 - h)


def _identity(z):
    return z


def _identity_grad(z, h):
    return torch.ones_like(h)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(torch.tanh, _tanh_grad),
    "relu": Activation(torch.relu, _relu_grad),
    "sigmoid": Activation(torch.sigmoid, _sigmoid_grad),
    "identity": Activation(_identity, _identity_grad),
}


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


# ------------------------------------------------------------------------------------------- losses
# Each loss maps the output-layer pre-activation z [B, C] and float targets t [B, C] to the model
# output y, the batch-mean training loss and dL/dz, with PyTorch's exact semantics.
LOSSES = ("bce", "mse", "ce")
OUT_ACT = {"bce": "sigmoid", "mse": "identity", "ce": "identity"}


def output(loss: str, z: torch.Tensor) -> torch.Tensor:
    """The model output the paper calls y (sigmoid probabilities for BCE, logits for CE, z for MSE)."""
    return torch.sigmoid(z) if loss == "bce" else z


def prediction(loss: str, y: torch.Tensor) -> torch.Tensor:
    """What output errors are formed from: class probabilities (softmax of the logits for CE; the
    sigmoid outputs for BCE) or the regression values."""
    return torch.softmax(y, dim=1) if loss == "ce" else y


def loss_value(loss: str, y: torch.Tensor, t: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    if loss == "bce":
        return F.binary_cross_entropy(y, t, reduction=reduction)
    if loss == "mse":
        return F.mse_loss(y, t, reduction=reduction)
    if loss == "ce":
        return F.cross_entropy(y, t, reduction=reduction)
    raise ConfigError(f"loss={loss!r} is not allowed; choose one of: {', '.join(LOSSES)}")


def dloss_dy(loss: str, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """∂(batch-mean loss)/∂y, as autograd computes it (BCE clamps y(1−y) at 1e-12)."""
    n = y.numel()
    if loss == "bce":
        return (y - t) / torch.clamp(y * (1 - y), min=1e-12) / n
    if loss == "mse":
        return 2.0 * (y - t) / n
    if loss == "ce":
        return (torch.softmax(y, dim=1) - t) / y.shape[0]
    raise ConfigError(f"loss={loss!r} is not allowed; choose one of: {', '.join(LOSSES)}")


def dloss_dz(loss: str, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """∂(batch-mean loss)/∂z for the output pre-activation z (chain rule through the output activation)."""
    g = dloss_dy(loss, y, t)
    return g * (y * (1 - y)) if loss == "bce" else g


# -------------------------------------------------------------------------------------------- model
class MLP(nn.Module):
    """``sizes = [n_in, h_1, …, h_d, n_out]``; hidden activation ``act``; loss decides the output
    activation (sigmoid for BCE, identity otherwise). Default PyTorch init unless ``init`` says else."""

    def __init__(self, sizes: list[int], act: str = "tanh", loss: str = "bce", bias: bool = True,
                 init: str = "default"):
        super().__init__()
        if len(sizes) < 2 or any((not isinstance(s, int)) or s < 1 for s in sizes):
            raise ConfigError(f"sizes={sizes!r} must be a list of >= 2 positive integers")
        check_choice("act", act, ACTIVATIONS)
        check_choice("loss", loss, LOSSES)
        check_choice("init", init, ("default", "he_uniform", "orthogonal"))
        self.sizes, self.act_name, self.loss, self.init_name = list(sizes), act, loss, init
        self.hw = None  # a repro.quant.Hardware when the run simulates low-precision / analog hardware
        self.act = ACTIVATIONS[act]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))
        for lin in self.layers:
            if init == "he_uniform":
                bound = math.sqrt(6.0 / lin.in_features)
                nn.init.uniform_(lin.weight, -bound, bound)
            elif init == "orthogonal":
                nn.init.orthogonal_(lin.weight)
            if bias and init != "default":
                nn.init.zeros_(lin.bias)

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.layers) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model output y (sigmoid probabilities for BCE, logits for CE, values for MSE)."""
        if self.hw is not None:
            return self.forward_all(x)[1][-1]
        h = x
        for lin in self.layers[:-1]:
            h = self.act.fn(lin(h))
        return output(self.loss, self.layers[-1](h))

    def layer(self, i: int, h: torch.Tensor, mask: torch.Tensor | None = None):
        """Layer i on input h: (pre-activation z, output). Hidden layers: ``mask`` (consistent dropout)
        multiplies z, then the activation; the run's hardware model (read noise, activation rounding,
        rounded back-propagated errors) applies here. The last layer returns the model output."""
        lin, hw = self.layers[i], self.hw
        z = lin(h) if hw is None else torch.nn.functional.linear(h, hw.weight(lin.weight), lin.bias)
        if i == len(self.layers) - 1:
            return z, output(self.loss, z)
        if mask is not None:
            z = z * mask
        h = self.act.fn(z)
        if hw is not None:
            h = hw.act(h)
            if h.requires_grad and "errors" in hw.signals:  # BP: round the back-propagated error
                h.register_hook(lambda g: hw.signal(g, "errors"))
        return z, h

    def forward_all(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None):
        """All pre-activations and activations: ``zs[i]``, ``hs[i+1]`` for layer i; ``hs[0] = x``.
        ``masks[i]`` (optional) multiplies hidden pre-activation i (consistent dropout)."""
        hs, zs = [x], []
        for i in range(len(self.layers)):
            z, h = self.layer(i, hs[-1], None if masks is None or i == len(self.layers) - 1 else masks[i])
            zs.append(z)
            hs.append(h)
        return zs, hs


IMAGE_SHAPES = {784: (1, 28, 28), 3072: (3, 32, 32)}  # flat input size -> (channels, height, width)


def max_pool_2x2(h: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(h, 2)`` (2×2 windows, stride 2, a trailing odd row/column dropped) as two strided
    elementwise maxima: the same values — a maximum is exact and NaN propagates in both — for no gradient.
    On this CPU (torch 2.14, one thread) ``F.max_pool2d`` takes ≈ 7 ms for a [50, 32, 24, 24] map, this 0.3 ms:
    it was 40 % of an FTP CNN step (session 35)."""
    H, W = h.shape[-2] // 2 * 2, h.shape[-1] // 2 * 2
    rows = torch.maximum(h[..., 0:H:2, :W], h[..., 1:H:2, :W])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


CNN_DEFAULTS = {"channels": [4, 4], "fc": [], "kernel": 6, "padding": 2, "pool": "max", "bn": True,
                "conv_dropout": 0.0, "fc_dropout": 0.0, "fc_act": "identity", "bias": True, "stride": 1,
                "pool_scale": 1.0}


class CNN(nn.Module):
    """A small CNN (ffzero.md §2.11 by default): conv blocks ``conv(kernel, padding, stride 1) → BatchNorm2d
    → act → pool 2×2 (max|avg) → dropout``, then FC layers (hidden FC outputs pass through ``fc_act`` and
    dropout) ending in ``n_out`` outputs. Datasets live as flat tensors; inputs are viewed as images of
    ``in_shape``. Conv layers have no bias when followed by BatchNorm (its β is the shift); ``bias=False``
    removes every bias (PEPITA's / FTP's ``Net1conv1fc``: conv 5×5 → ReLU → max-pool → FC, no biases).

    ``convs``/``bns`` hold the conv blocks and ``layers`` the FC layers (as in :class:`MLP`), so rules can
    walk the net block by block: :meth:`conv_pre` is the block's normalised pre-activation and
    :meth:`conv_out` what the next block receives."""

    def __init__(self, in_shape: tuple[int, int, int], n_out: int, channels: list[int], fc: list[int] = (),
                 kernel: int = 6, padding: int = 2, pool: str = "max", bn: bool = True, act: str = "relu",
                 fc_act: str = "identity", loss: str = "ce", conv_dropout: float = 0.0, fc_dropout: float = 0.0,
                 bias: bool = True, init: str = "default", stride: int = 1, pool_scale: float = 1.0):
        super().__init__()
        check_choice("model.act", act, ACTIVATIONS)
        check_choice("model.cnn.fc_act", fc_act, ACTIVATIONS)
        check_choice("model.loss", loss, LOSSES)
        check_choice("model.cnn.pool", pool, ("max", "avg"))
        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(f"model.cnn.channels={channels!r} must be a non-empty list of positive integers")
        if any(not isinstance(w, int) or w < 1 for w in fc):
            raise ConfigError(f"model.cnn.fc={fc!r} must be a list of positive integers")
        for k, v in (("conv_dropout", conv_dropout), ("fc_dropout", fc_dropout)):
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"model.cnn.{k}={v!r} must be in [0, 1)")
        self.in_shape, self.loss, self.act_name = tuple(in_shape), loss, act
        self.act, self.fc_act = ACTIVATIONS[act], ACTIVATIONS[fc_act]
        self.hw = None
        self.kernel, self.padding, self.pool_name = kernel, padding, pool
        self.convs, self.bns, self.spatial = nn.ModuleList(), nn.ModuleList(), []
        c_in, hgt, wid = in_shape
        if not isinstance(stride, int) or stride < 1:
            raise ConfigError(f"model.cnn.stride={stride!r} must be a positive integer")
        self.pool_scale = float(pool_scale)
        for c in channels:
            hgt = (hgt + 2 * padding - kernel) // stride + 1  # conv output
            wid = (wid + 2 * padding - kernel) // stride + 1
            if hgt < 2 or wid < 2:
                raise ConfigError(f"model.cnn: {len(channels)} conv blocks with kernel {kernel} shrink "
                                  f"{tuple(in_shape)} below 2×2; use fewer blocks or a smaller kernel")
            self.convs.append(nn.Conv2d(c_in, c, kernel, stride=stride, padding=padding, bias=bias and not bn))
            self.bns.append(nn.BatchNorm2d(c) if bn else nn.Identity())
            self.spatial.append((hgt, wid))  # where the goodness of this block lives (before pooling)
            hgt, wid, c_in = hgt // 2, wid // 2, c
        self.conv_drop, self.fc_drop = nn.Dropout(conv_dropout), nn.Dropout(fc_dropout)
        sizes = [c_in * hgt * wid] + list(fc) + [n_out]
        self.sizes = sizes  # of the FC part
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))
        self.bn = bn
        check_choice("model.init", init, ("default", "he_uniform", "orthogonal"))
        if init == "he_uniform":  # U(±√(6/fan_in)), PEPITA's init; biases zero
            for m in list(self.convs) + list(self.layers):
                nn.init.uniform_(m.weight, -math.sqrt(6.0 / m.weight[0].numel()), math.sqrt(6.0 / m.weight[0].numel()))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        elif init == "orthogonal":  # conv kernels as [c_out, c_in·k·k] matrices (FOTON's conv reconstruction)
            for m in list(self.convs) + list(self.layers):
                nn.init.orthogonal_(m.weight.data.view(m.weight.shape[0], -1))

    def conv_pre(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Block i's BatchNorm(conv(h)) [B, c, H', W'] (``h`` an image batch)."""
        return self.bns[i](self.convs[i](h))

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """2×2 pooling; ``pool_scale`` multiplies it (2 makes average pooling row-orthonormal: P Pᵀ = I).
        Max pooling on the CPU where no gradient flows through it (forward-only rules, evaluation) is
        :func:`max_pool_2x2` — the same values, ≈ 25× faster; with autograd (BP) it stays ``F.max_pool2d``."""
        if self.pool_name == "max" and h.device.type == "cpu" and not (h.requires_grad and torch.is_grad_enabled()):
            p = max_pool_2x2(h)
        else:
            p = (F.max_pool2d if self.pool_name == "max" else F.avg_pool2d)(h, 2)
        return p if self.pool_scale == 1.0 else p * self.pool_scale

    def conv_out(self, i: int, a: torch.Tensor) -> torch.Tensor:
        return self.conv_drop(self.pool(self.act.fn(a)))

    def image(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(len(x), *self.in_shape)

    @property
    def units(self) -> list[nn.Module]:
        """The weight layers in order: conv blocks, then the FC layers (the last gives the logits)."""
        return list(self.convs) + list(self.layers)

    def unit_pass(self, h: torch.Tensor, start: int = 0):
        """Unit-by-unit forward for local rules (FOTON, FTP, PEPITA, direct feedback on CNNs); BatchNorm and
        dropout are not applied, so those rules require ``bn=false``. From unit ``start`` (``h`` its input:
        an image map for a conv block, features for an FC layer) to the logits, return every unit's input,
        pre-activation and output — a conv block's output before pooling."""
        ins, pres, outs, nc = [], [], [], len(self.convs)
        for k in range(start, nc):
            ins.append(h)
            pres.append(self.convs[k](h))
            outs.append(self.act.fn(pres[-1]))
            h = self.pool(outs[-1])
        h = h.flatten(1)
        for j in range(max(start - nc, 0), len(self.layers)):
            ins.append(h)
            pres.append(self.layers[j](h))
            h = pres[-1] if j == len(self.layers) - 1 else self.fc_act.fn(pres[-1])
            outs.append(h)
        return ins, pres, outs

    def unit_grad(self, k: int, inp: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unit ``k``'s weight and bias gradients (summed over the batch) for the pre-activation gradient
        ``d`` given its input ``inp`` — a conv block's in closed form (``conv2d_weight``), no autograd."""
        u = self.units[k]
        if k < len(self.convs):
            gw = conv2d_weight(inp, u.weight.shape, d, stride=u.stride, padding=u.padding)
            gb = d.sum((0, 2, 3))
        else:
            gw, gb = d.t() @ inp, d.sum(0)
        return gw, (gb if u.bias is not None else None)

    def unit_shapes(self) -> list[tuple[int, ...]]:
        """Each hidden unit's output shape per sample (conv blocks: before pooling)."""
        shapes = [(c.out_channels, *hw) for c, hw in zip(self.convs, self.spatial)]
        return shapes + [(n,) for n in self.sizes[1:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.image(x)
        for i in range(len(self.convs)):
            h = self.conv_out(i, self.conv_pre(i, h))
        h = h.flatten(1)
        for lin in self.layers[:-1]:
            h = self.fc_drop(self.fc_act.fn(lin(h)))
        return output(self.loss, self.layers[-1](h))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block of F³'s simplified ViT (f3.md §2.9): x + Attn(LN x), then x + MLP(LN x); input
    and output flat [B, tokens·dim]."""

    def __init__(self, tokens: int = 16, dim: int = 32, heads: int = 8, head_dim: int = 64, mlp: int = 128):
        super().__init__()
        self.tokens, self.dim, self.heads, self.head_dim = tokens, dim, heads, head_dim
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.Tanh(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = x.view(B, self.tokens, self.dim)
        q, k, v = self.qkv(self.ln1(x)).view(B, self.tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1) @ v  # [B, heads, T, hd]
        x = x + self.proj(a.transpose(1, 2).reshape(B, self.tokens, -1))
        x = x + self.mlp(self.ln2(x))
        return x.reshape(B, -1)


def patch_order(side: int = 28, patch: int = 7) -> torch.Tensor:
    """Indices that reorder a flat side×side image into patch-major order (patch row, patch column, pixel
    row, pixel column), as F³'s ViT cuts its input."""
    idx = torch.arange(side * side).view(side // patch, patch, side // patch, patch)
    return idx.permute(0, 2, 1, 3).reshape(-1)


class ViT(nn.Module):
    """F³'s "simplified ViT" for 28×28 MNIST (f3.md §2.9): 16 non-overlapping 7×7 patches concatenated in
    patch-major order, one dense Linear(784 → 512), viewed as 16 tokens of width 32 (no class token, no
    positional encoding); 4 Transformer blocks (8 heads of 64, MLP 32→128→32 with tanh); head
    Linear(512 → 512)–tanh, Linear(512 → n_out) logits. 965,898 parameters for 10 classes.

    For direct-feedback rules the net is a stack of ``blocks`` (each receives a pseudo-gradient at its
    output and back-propagates only inside itself): [embedding + block 1], block 2, block 3, block 4,
    [head hidden + tanh]; ``out`` is the output layer (also ``layers[-1]``)."""

    def __init__(self, n_out: int = 10, loss: str = "ce", side: int = 28, patch: int = 7, width: int = 512,
                 depth: int = 4, heads: int = 8, head_dim: int = 64, mlp: int = 128):
        super().__init__()
        check_choice("model.loss", loss, LOSSES)
        tokens = (side // patch) ** 2
        if width % tokens:
            raise ConfigError(f"model.vit: width={width} must be divisible by the {tokens} patches")
        self.loss, self.hw, self.n_out = loss, None, n_out
        self.register_buffer("order", patch_order(side, patch), persistent=False)
        embed = nn.Linear(side * side, width)
        tb = [TransformerBlock(tokens, width // tokens, heads, head_dim, mlp) for _ in range(depth)]
        self.blocks = nn.ModuleList([nn.Sequential(embed, tb[0]), *tb[1:], nn.Sequential(nn.Linear(width, width),
                                                                                          nn.Tanh())])
        self.out = nn.Linear(width, n_out)
        self.layers = nn.ModuleList([self.out])
        self.block_widths = [width] * len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x[:, self.order]
        for b in self.blocks:
            h = b(h)
        return output(self.loss, self.out(h))


def build_model(cfg: dict, n_in: int, n_out: int) -> nn.Module:
    """``cfg``: {arch: mlp|cnn, width, depth, act, loss, bias, init, widths, out_width, cnn}. MLP: ``widths``
    (a list of hidden widths), when given, replaces width × depth. CNN: ``cnn`` holds the conv/FC settings
    (:data:`CNN_DEFAULTS`). ``out_width`` overrides the dataset's output size (FFzero regression reads a
    10-d last layer against an antipodal prototype, ffzero.md §2.8)."""
    arch = cfg.get("arch", "mlp")
    check_choice("model.arch", arch, ("mlp", "cnn", "vit"))
    if arch == "vit":
        if n_in != 784:
            raise ConfigError(f"model.arch='vit' is F³'s 28×28 MNIST ViT; got {n_in} inputs")
        return ViT(n_out, cfg.get("loss", "ce"))
    ow = cfg.get("out_width")
    if ow is not None:
        if not isinstance(ow, int) or ow < 1:
            raise ConfigError(f"model.out_width={ow!r} must be a positive integer or null")
        n_out = ow
    if arch == "cnn":
        c = cfg.get("cnn") or {}
        bad = set(c) - set(CNN_DEFAULTS)
        if bad:
            raise ConfigError(f"unknown key(s) {sorted(bad)} in model.cnn; allowed: {sorted(CNN_DEFAULTS)}")
        if n_in not in IMAGE_SHAPES:
            raise ConfigError(f"model.arch='cnn' needs image inputs of size {sorted(IMAGE_SHAPES)}; got {n_in}")
        c = {**CNN_DEFAULTS, **c}
        return CNN(IMAGE_SHAPES[n_in], n_out, list(c["channels"]), list(c["fc"]), c["kernel"], c["padding"],
                   c["pool"], c["bn"], cfg.get("act", "relu"), c["fc_act"], cfg.get("loss", "ce"),
                   c["conv_dropout"], c["fc_dropout"], c["bias"], cfg.get("init", "default"), c["stride"],
                   c["pool_scale"])
    if cfg.get("widths") is not None:
        ws = cfg["widths"]
        if not isinstance(ws, list) or any(not isinstance(w, int) or w < 1 for w in ws):
            raise ConfigError(f"model.widths={ws!r} must be a list of positive integers")
        return MLP([n_in] + ws + [n_out], act=cfg.get("act", "tanh"), loss=cfg.get("loss", "bce"),
                   bias=cfg.get("bias", True), init=cfg.get("init", "default"))
    width, depth = cfg.get("width", 500), cfg.get("depth", 1)
    for k, v in (("model.width", width), ("model.depth", depth)):
        if not isinstance(v, int) or v < (0 if k == "model.depth" else 1):
            raise ConfigError(f"{k}={v!r} must be a {'non-negative' if k == 'model.depth' else 'positive'} integer")
    return MLP([n_in] + [width] * depth + [n_out], act=cfg.get("act", "tanh"), loss=cfg.get("loss", "bce"),
               bias=cfg.get("bias", True), init=cfg.get("init", "default"))
