"""Unmasking policies and their registry.

Policies are named in specs such as ``confidence``, ``threshold:0.9`` or
``topk_softmax:k=5:temperature=0.1``: the name, then ``:``-separated arguments,
either ``key=value`` or a bare value for the first parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from unmask.engine.policy import Capabilities, Policy
from unmask.policies.base import ScorePolicy, top_k_mask
from unmask.policies.baselines import DilatedPolicy, KLASSPolicy, PCSamplerPolicy
from unmask.policies.heuristics import (
    ConfidencePolicy,
    EntropyBoundedPolicy,
    EntropyPolicy,
    FactorPolicy,
    LeftToRightPolicy,
    MarginPolicy,
    OriginPolicy,
    RandomPolicy,
    ScheduledThresholdPolicy,
    ThresholdPolicy,
    TopKSoftmaxPolicy,
)
from unmask.policies.oracle import gt_margin_oracle, oracle

HEURISTICS: dict[str, Callable[..., Policy]] = {
    "random": RandomPolicy,
    "confidence": ConfidencePolicy,
    "margin": MarginPolicy,
    "entropy": EntropyPolicy,
    "left_to_right": LeftToRightPolicy,
    "topk_softmax": TopKSoftmaxPolicy,
    "threshold": ThresholdPolicy,
    "scheduled_threshold": ScheduledThresholdPolicy,
    "factor": FactorPolicy,
    "eb": EntropyBoundedPolicy,
    "origin": OriginPolicy,
    "klass": KLASSPolicy,
    "pc_sampler": PCSamplerPolicy,
    "dus": DilatedPolicy,
}
# upper bounds that read the gold answer (unmask.policies.oracle): references in tables, never deployable
ORACLES: dict[str, Callable[..., Policy]] = {"oracle": oracle, "gt_margin": gt_margin_oracle}
SPECS = {**HEURISTICS, **ORACLES}


def parse_value(text: str) -> int | float | str:
    """A spec or command-line value as int, float or string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def check_spec(spec: object) -> None:
    """One clear error for a policy spec that is not a non-empty string."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"a policy spec is a non-empty string such as 'confidence', 'threshold:0.9' or a checkpoint "
            f"path; got {type(spec).__name__} {spec!r}"
        )


def split_spec(spec: str) -> tuple[str, list[str]]:
    """The one policy-spec syntax, for heuristics and learned policies alike: ``name[:part]...``, each part
    ``key=value`` (or, for heuristics, a bare value bound to the next parameter): (name, parts)."""
    check_spec(spec)
    name, *parts = spec.strip().split(":")
    return name, [p for p in parts if p]


def parse_spec(spec: str) -> tuple[str, dict]:
    """Split ``name:a:key=b`` into the name and keyword arguments (bare values bind to the first parameter)."""
    name, parts = split_spec(spec)
    if name not in SPECS:
        return name, {}
    params = [p for p in inspect.signature(SPECS[name]).parameters]
    kwargs: dict = {}
    for i, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if not sep:
            if i >= len(params):
                raise ValueError(f"policy {spec!r}: too many arguments; {name} takes {params or 'none'}")
            key, value = params[i], part
        if key not in params:
            raise ValueError(f"policy {spec!r}: unknown argument {key!r}; {name} takes {params or 'none'}")
        kwargs[key] = parse_value(value)
    return name, kwargs


def get_policy(spec: str) -> Policy:
    """Build a heuristic policy from its spec; see the module docstring."""
    name, kwargs = parse_spec(spec)
    if name not in SPECS:
        raise ValueError(
            f"unknown policy {name!r}; valid policies: {', '.join(HEURISTICS)}, the oracles "
            f"{', '.join(ORACLES)} (or a policy checkpoint path)"
        )
    try:
        return SPECS[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"policy {spec!r}: {e}") from e


__all__ = [
    "Capabilities",
    "HEURISTICS",
    "ORACLES",
    "Policy",
    "ScorePolicy",
    "check_spec",
    "get_policy",
    "parse_spec",
    "parse_value",
    "split_spec",
    "top_k_mask",
]
