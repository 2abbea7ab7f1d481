"""Learning rules behind one interface (:class:`Rule`), one file per rule, and the registry that maps
the names used in configs and papers to them."""
from __future__ import annotations

from ..models import ConfigError
from .base import Batch, Rule, StepOut, set_grad
from .bp import BP
from .dfa import DFA
from .drtp import DRTP
from .f3 import F3
from .ffzero import FF, BPDD
from .foton import FOTON
from .ftp import FTP
from .llo import LLO
from .pepita import PEPITA
from .pepita_wm import PEPITAWM

RULES: dict[str, type[Rule]] = {r.name: r for r in (BP, LLO, DFA, DRTP, F3, PEPITA, PEPITAWM, FOTON, FTP, FF, BPDD)}

# Paper names -> (rule, parameters). Figures and claims use these labels.
ALIASES: dict[str, tuple[str, dict]] = {
    "BP": ("bp", {}),
    "LLO": ("llo", {}),
    "DFA": ("dfa", {}),
    "DRTP": ("drtp", {}),
    "PEPITA": ("pepita", {}),
    "PEPITA+WM": ("pepita_wm", {}),
    "FOTON": ("foton", {}),
    "FTP": ("ftp", {}),
    "BP+AD": ("bp", {}),
    "BP+DD": ("bp_dd", {}),
    "FF+AD": ("ff", {"estimator": "ad"}),
    "FF+DD": ("ff", {"estimator": "dd"}),
    "F3-Error": ("f3", {"error_info": "delayed_error"}),
    "F3-Loss": ("f3", {"error_info": "delayed_loss"}),
    "F3-Error+OneHot": ("f3", {"error_info": "delayed_error_one_hot"}),
    "F3-Loss+OneHot": ("f3", {"error_info": "delayed_loss_one_hot"}),
    "F3-Error+Softmax": ("f3", {"error_info": "delayed_error_softmax"}),
    "F3-Loss+Softmax": ("f3", {"error_info": "delayed_loss_softmax"}),
}


def make_rule(cfg: dict) -> Rule:
    """``cfg = {"name": <rule>, **params}``."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in RULES:
        raise ConfigError(f"rule.name={name!r} is not allowed; choose one of: {', '.join(RULES)}")
    return RULES[name](**cfg)


def rule_config(label: str, **extra) -> dict:
    """The rule config for a paper label such as 'F3-Error'."""
    if label not in ALIASES:
        raise ConfigError(f"algorithm={label!r} is not known; choose one of: {', '.join(ALIASES)}")
    name, params = ALIASES[label]
    return {"name": name, **params, **extra}


__all__ = ["Batch", "Rule", "StepOut", "set_grad", "RULES", "ALIASES", "make_rule", "rule_config"]
