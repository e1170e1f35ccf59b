"""The one resolver from a policy spec to a policy: a heuristic (:func:`unmask.policies.get_policy`), a learned
policy shipped for the model (by kind: ``upo``, ``bernoulli``, ``plackett-luce``), a policy checkpoint path or
``hf://OWNER/NAME[@REV]``, each with ``:key=value`` options."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from unmask.core.hub import HF_SCHEME, resolve_hf_spec
from unmask.models.base import MaskedDiffusionModel
from unmask.policies import Policy, check_spec, get_policy, split_spec
from unmask.policies.learned import KINDS, load_policy

SHIPPED_POLICIES = Path(__file__).resolve().parents[1] / "assets" / "policies"


def resolve_policy(
    spec: str, model: MaskedDiffusionModel, alpha: float | None = None, check: Callable[[Policy], None] | None = None
) -> Policy:
    """A heuristic spec, a learned policy shipped for ``model`` by kind (``upo``, ``bernoulli``,
    ``plackett-luce``) or a policy checkpoint path. Learned policies take ``:key=value`` options (their
    ``OPTIONS``, :meth:`unmask.policies.learned.LearnedPolicy.with_options`): ``mode=greedy|sample``;
    fixed-count ones ``sigma=S`` (Gaussian noise for multi-shot sampling, UPO App. D); parallel policies
    ``temperature=T`` (tau_pi) and, when alpha-conditioned, ``alpha=A`` (``alpha`` sets it too unless the
    spec does). ``hf://OWNER/NAME[@REV][:options]``: a policy on the Hugging Face Hub
    (through huggingface_hub's cache, :mod:`unmask.core.hub`). ``check``: the caller's refusal of a policy it cannot
    run (raise ValueError), called on the loaded policy before it is fitted to ``model`` (a serving hook that gives
    logits only refuses policies that read hidden features)."""
    check_spec(spec)
    hub_name = None
    if spec.strip().startswith(HF_SCHEME):
        hub_name, path, hub_options = resolve_hf_spec(spec)
        spec = f"{path}:{hub_options}" if hub_options else str(path)
    name, options = split_spec(spec)
    shipped = sorted(p.name for p in SHIPPED_POLICIES.glob("*")) if SHIPPED_POLICIES.is_dir() else []
    if name in shipped:  # a shipped policy by its full name, e.g. bernoulli-arithmetic-carry
        policy = load_policy(SHIPPED_POLICIES / name)
        policy.name = name
    elif name not in KINDS and not Path(name).is_dir():
        policy = get_policy(spec)
        if check is not None:
            check(policy)
        return policy
    elif name in KINDS:
        path = SHIPPED_POLICIES / f"{name}-{model.name}"
        if path.resolve().parent != SHIPPED_POLICIES.resolve() or not path.is_dir():  # a name with "/" or ".."
            raise ValueError(
                f"no shipped {name} policy for model {model.name!r} (shipped: {', '.join(shipped) or 'none'}); "
                f"train one with `unmask train-policy --policy {name} --model {model.name}` and pass its directory"
            )
        policy = load_policy(path)
        policy.name = name
    else:
        policy = load_policy(name)
        if hub_name:
            policy.name = f"{policy.kind}:{hub_name}"
    if check is not None:
        check(policy)
    policy.check_model(model)
    trained = getattr(policy.config, "mdm_name", "")
    if trained and trained != model.name:
        warnings.warn(
            f"policy {policy.name!r} was trained against the MDM {trained!r}, not {model.name!r}: a learned "
            "policy reads its own MDM's confidences, so with another one it can fail (even solve nothing) "
            f"although the shapes fit; evaluate it with --model {trained}, or train one for {model.name!r}",
            stacklevel=2,
        )
    policy.to(model.device)
    if alpha is not None and policy.capabilities.conditioned and not any(o.startswith("alpha=") for o in options):
        options.append(f"alpha={alpha:g}")
    for option in options:
        key, _, value = option.partition("=")
        try:
            policy = policy.with_options(**{key: value})
        except ValueError as e:
            raise ValueError(f"policy {spec!r}: {e}") from e
        policy.name += f":{option}"
    return policy


def resolve_policies(
    specs: str | Sequence[str], model: MaskedDiffusionModel, alpha: float | None = None
) -> list[Policy]:
    """Turn a comma-separated list (or a list) of policy specs into policy objects; ``alpha`` goes to the
    alpha-conditioned ones (an error when there is none)."""
    if isinstance(specs, str):
        if not specs.strip():
            raise ValueError("no policies given; e.g. --policies confidence,threshold:0.9")
        specs = specs.split(",")
        if not all(s.strip() for s in specs):
            raise ValueError(
                f"--policies {','.join(specs)!r} has an empty entry (two commas in a row, or one at an "
                "end); give comma-separated specs, e.g. confidence,threshold:0.9"
            )
    if not specs:
        raise ValueError("no policies given; e.g. --policies confidence,threshold:0.9")
    policies = [resolve_policy(s, model, alpha) for s in specs]
    if alpha is not None and not any(p.capabilities.conditioned for p in policies):
        raise ValueError(
            f"--alpha {alpha:g} applies to alpha-conditioned learned policies (trained with --alpha-range); "
            f"none of {', '.join(p.name for p in policies)} is one"
        )
    return policies
