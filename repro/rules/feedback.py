"""Direct feedback to hidden layers (f3.md §2.2): the machinery DFA, DRTP, LLO and F³ share.

Every hidden layer i receives the pseudo-gradient ``g_i = e @ B_i`` at its output (``e``: a per-sample
feedback vector [B, C], ``B_i``: a fixed random matrix [C, n_i]); the local chain rule gives
``δz_i = g_i ⊙ act'(z_i)``, ``grad W_i = δz_iᵀ h_{i-1}``, ``grad b_i = Σ_batch δz_i``. ``g_i`` is not
divided by the batch size. The output layer gets the exact gradient of the batch-mean loss. All of
it is computed in one forward pass under ``no_grad``; no autograd graph is built.
"""
from __future__ import annotations

import math

import torch

from ..models import ConfigError, check_choice, dloss_dz, loss_value
from .base import Batch, Rule, StepOut, set_grad, signal

FEEDBACK_INITS = ("kaiming_uniform", "trinomial", "binomial", "pm_identity")


def feedback_matrix(kind: str, n_out: int, n_hidden: int, device=None) -> torch.Tensor:
    """A fixed feedback matrix [C, n] (f3.md §2.7), drawn from the global torch RNG."""
    check_choice("rule.feedback_init", kind, FEEDBACK_INITS)
    if kind == "kaiming_uniform":  # kaiming_uniform_(a=√5), fan_in = n  ⇒  U(±1/√n)
        b = torch.empty(n_out, n_hidden, device=device)
        torch.nn.init.kaiming_uniform_(b, a=math.sqrt(5))
        return b
    if kind == "trinomial":
        return torch.randint(-1, 2, (n_out, n_hidden), device=device).float()
    if kind == "binomial":
        return torch.randint(0, 2, (n_out, n_hidden), device=device).float()
    eye = torch.eye(n_out, device=device)
    pattern = torch.cat([eye, -eye], dim=1)  # [C, 2C]
    reps = -(-n_hidden // (2 * n_out))
    return pattern.repeat(1, reps)[:, :n_hidden].contiguous()


class DirectFeedback(Rule):
    """Base for rules whose hidden layers learn from a projected per-sample vector ``e``."""

    PARAMS = {"feedback_init": "kaiming_uniform"}
    train_hidden = True

    def setup(self, model, n_train):
        dev = model.layers[0].weight.device
        self.blockwise = hasattr(model, "blocks")  # e.g. the ViT: blocks back-propagate internally
        self.cnn = len(getattr(model, "convs", ())) > 0
        if self.blockwise:
            self.needs_autograd = True  # inside each block only
            n_out, widths = model.n_out, model.block_widths
        elif self.cnn:  # each conv block's output map before pooling, then the hidden FC layers
            if model.bn:
                raise ConfigError(f"rule {self.name!r} on a CNN needs model.cnn.bn=false (its feedback reaches "
                                  f"each conv output directly; BatchNorm would need back-propagation)")
            n_out, widths = model.sizes[-1], [math.prod(s) for s in model.unit_shapes()]
        else:
            n_out, widths = model.sizes[-1], model.sizes[1:-1]
        self.B = [feedback_matrix(self.params["feedback_init"], n_out, n, dev) for n in widths]
        self.loss = model.loss

    def feedback(self, batch: Batch, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """The per-sample feedback vector e [B, C]."""
        raise NotImplementedError

    def trainable(self, model):
        return list(model.parameters()) if self.train_hidden else list(model.layers[-1].parameters())

    def _block_step(self, model, batch: Batch) -> StepOut:
        """Block models (f3.md §2.9): block i gets ``e @ B_i`` at its output and back-propagates it only
        inside itself (its input is detached); the output layer gets the exact local gradient."""
        outs, h = [], batch.x[:, model.order] if hasattr(model, "order") else batch.x
        with torch.set_grad_enabled(self.train_hidden):
            for blk in model.blocks:
                h = blk(h.detach())
                outs.append(h)
        hl = outs[-1].detach()
        with torch.no_grad():
            y = model.out(hl)
            gz = dloss_dz(model.loss, y, batch.y)
            set_grad(model.out.weight, gz.t() @ hl)
            if model.out.bias is not None:
                set_grad(model.out.bias, gz.sum(0))
            e = self.feedback(batch, y) if self.train_hidden else None
        if self.train_hidden:
            for i, (blk, o) in enumerate(zip(model.blocks, outs)):
                ps = list(blk.parameters())
                for p, g in zip(ps, torch.autograd.grad(o, ps, grad_outputs=signal(model, e @ self.B[i], "errors"))):
                    set_grad(p, g)
        return StepOut(loss_value(model.loss, y, batch.y), y)

    def _cnn_step(self, model, batch: Batch) -> StepOut:
        """CNNs: unit k (a conv block, before pooling, or a hidden FC layer) gets ``e @ B_k`` reshaped to
        its output; its kernel gradient is the closed-form ``conv2d_weight`` of the local δ."""
        ins, pres, outs = model.unit_pass(model.image(batch.x))
        y, nc = outs[-1], len(model.convs)
        gz = dloss_dz(model.loss, y, batch.y)
        out = model.layers[-1]
        set_grad(out.weight, gz.t() @ ins[-1])
        if out.bias is not None:
            set_grad(out.bias, gz.sum(0))
        if self.train_hidden:
            e = self.feedback(batch, y)
            for k in range(len(model.units) - 1):
                act = model.act if k < nc else model.fc_act
                dz = signal(model, e @ self.B[k], "errors").view_as(outs[k]) * act.grad(pres[k], outs[k])
                gw, gb = model.unit_grad(k, ins[k], dz)
                set_grad(model.units[k].weight, gw)
                if gb is not None:
                    set_grad(model.units[k].bias, gb)
        return StepOut(loss_value(model.loss, y, batch.y), y)

    @torch.no_grad()
    def step(self, model, batch: Batch) -> StepOut:
        if self.blockwise:
            with torch.enable_grad():
                return self._block_step(model, batch)
        if self.cnn:
            return self._cnn_step(model, batch)
        zs, hs = model.forward_all(batch.x)
        y = hs[-1]
        loss = loss_value(model.loss, y, batch.y)
        out_layer = model.layers[-1]
        gz = dloss_dz(model.loss, y, batch.y)
        set_grad(out_layer.weight, gz.t() @ hs[-2])
        if out_layer.bias is not None:
            set_grad(out_layer.bias, gz.sum(0))
        if self.train_hidden:
            e = self.feedback(batch, y)
            for i, lin in enumerate(model.layers[:-1]):
                dz = signal(model, e @ self.B[i], "errors") * model.act.grad(zs[i], hs[i + 1])
                set_grad(lin.weight, dz.t() @ hs[i])
                if lin.bias is not None:
                    set_grad(lin.bias, dz.sum(0))
        return StepOut(loss, y)

    def state_dict(self):
        return {f"B{i}": b for i, b in enumerate(getattr(self, "B", []))}

    def load_state_dict(self, state):
        self.B = [state[f"B{i}"] for i in range(len(state))]
