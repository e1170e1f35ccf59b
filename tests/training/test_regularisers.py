"""The reference regularisers of the GRPO loss (UPO Table 1) against a hand computation, with beta > 0.

For each reference, ``upo_loss`` with the reference minus ``upo_loss`` without one is the regulariser of Eq. 22,
beta * (1/G) sum_g D_g, where D_g is
* ``confidence``: CE(g_conf || g_phi) = -sum_n log g_phi(a_conf,n | x_n) (Eq. 28-29), a_conf the most confident
  allowed positions;
* ``softmax``: L_KL of Eq. 24 with g_ref = g_conf^tau ∝ exp(confidence / tau) (Eq. 25);
* ``topk``: L_KL with g_ref uniform over the K most confident positions (Eq. 26) and g_phi restricted to them
  (Eq. 27);
and L_KL = StopGrad(prod_n g_phi/g_old * (1 + sum_n log g_phi/g_ref)) * sum_n log g_phi(a_n | x_n) (Eq. 24).
The hand computation below walks the steps in plain Python (log-softmax over the allowed set, one draw at a time);
only the network's scores h_phi come from the policy.
"""

from __future__ import annotations

import math

import pytest
import torch

from unmask.policies.configs import UPOConfig
from unmask.policies.learned import LearnedPolicy
from unmask.training.grpo import RolloutBuffer, trajectory_kappa, upo_loss
from unmask.training.reference import Reference

L, D, K = 6, 4, 3  # positions, feature size, K of the Top-K reference
BETA = {"confidence": 0.3, "softmax": 0.2, "topk": 0.7}


def policy() -> LearnedPolicy:
    """A small g_phi whose residual is not zero, so g_phi differs from every reference."""
    torch.manual_seed(0)
    p = LearnedPolicy(
        UPOConfig(feature_size=D, d_model=8, n_head=2, prob_features=2, mlp_hidden=8, base_temperature=0.5)
    )
    torch.nn.init.normal_(p.scorer.mlp[-1].weight, std=0.5)
    return p


def buffer(kind: str, old_shift: float = 0.2) -> RolloutBuffer:
    """Two trajectories of 3 and 2 steps; actions of one or two ordered positions; old log-probs shifted from the
    current ones by up to ``old_shift`` (ratios near 1, as after a few updates)."""
    g = torch.Generator().manual_seed(1)
    n = 5
    confidence = torch.rand(n, L, generator=g) * 0.9 + 0.05
    allowed = torch.rand(n, L, generator=g) > 0.25
    allowed[:, :4] = True  # at least 4 allowed positions per step
    if kind == "topk":  # what UPOScorer.observe stores for the Top-K realisation: the K most confident allowed
        top = confidence.masked_fill(~allowed, -1).topk(K, 1).indices
        allowed = torch.zeros_like(allowed).scatter_(1, top, True)
    action = torch.full((n, 2), -1)
    for i in range(n):
        ids = allowed[i].nonzero().flatten()
        pick = ids[torch.randperm(len(ids), generator=g)[: 1 + i % 2]]
        action[i, : len(pick)] = pick
    obs = {
        "hidden": torch.randn(n, L, D, generator=g),
        "top_probs": torch.rand(n, L, 2, generator=g),
        "confidence": confidence,
        "allowed": allowed,
    }
    with torch.no_grad():
        logp = policy().log_prob(obs, action)
    old = logp + old_shift * (2 * torch.rand(n, generator=g) - 1)
    return RolloutBuffer(
        obs=obs,
        action=action,
        old_log_prob=old,
        traj=torch.tensor([0, 0, 0, 1, 1]),
        advantage=torch.tensor([0.8, -0.8]),
        length=torch.tensor([3.0, 2.0]),
    )


def draws_log_prob(scores: list[float], allowed: list[bool], order: list[int]) -> float:
    """log of drawing ``order`` one position at a time from softmax(scores) over the allowed, not yet drawn ones."""
    left = [i for i, a in enumerate(allowed) if a]
    total = 0.0
    for a in order:
        if a < 0:
            break
        z = math.log(sum(math.exp(scores[j]) for j in left))
        total += scores[a] - z
        left.remove(a)
    return total


def hand(kind: str, buf: RolloutBuffer, scores: torch.Tensor) -> dict[str, list[float]]:
    """Per step: log g_phi(a_n), log g_ref(a_n) and -log g_phi(a_conf,n), by the formulas of Table 1."""
    out: dict[str, list[float]] = {"logp": [], "logref": [], "ce": []}
    for i in range(len(buf)):
        s, allowed = scores[i].tolist(), buf.obs["allowed"][i].tolist()
        conf, order = buf.obs["confidence"][i].tolist(), buf.action[i].tolist()
        out["logp"].append(draws_log_prob(s, allowed, order))
        count = sum(a >= 0 for a in order)
        by_conf = sorted((j for j in range(L) if allowed[j]), key=lambda j: -conf[j])[:count]  # Eq. 28
        out["ce"].append(-draws_log_prob(s, allowed, by_conf))  # Eq. 29
        if kind == "softmax":  # Eq. 25
            out["logref"].append(draws_log_prob([c / 0.05 for c in conf], allowed, order))
        elif kind == "topk":  # Eq. 26: 1/K per draw over the K candidates (then 1/(K-1), ...)
            out["logref"].append(sum(-math.log(K - j) for j in range(count)))
    return out


def hand_kappa(buf: RolloutBuffer, h: dict[str, list[float]]) -> list[float]:
    """kappa_g = prod_n g_phi/g_old * (1 + sum_n log g_phi/g_ref) over trajectory g's steps (Eq. 24)."""
    kappa = []
    for g in range(len(buf.advantage)):
        steps = [i for i in range(len(buf)) if int(buf.traj[i]) == g]
        d_old = sum(h["logp"][i] - float(buf.old_log_prob[i]) for i in steps)
        d_ref = sum(h["logp"][i] - h["logref"][i] for i in steps)
        kappa.append(math.exp(d_old) * (1 + d_ref))
    return kappa


def regulariser(kind: str, p: LearnedPolicy, buf: RolloutBuffer) -> tuple[torch.Tensor, dict]:
    """upo_loss with the reference minus upo_loss with none: the beta * D part of -L_UPO (Eq. 22)."""
    idx = torch.arange(len(buf))
    ref = Reference(kind, beta=BETA[kind])
    kappa = trajectory_kappa(p, buf, ref, chunk=2) if ref.divergence == "kl" else None
    with_ref, stats = upo_loss(p, buf, idx, ref, 0.2, kappa, n_traj=2)
    without, _ = upo_loss(p, buf, idx, Reference("none"), 0.2, None, n_traj=2)
    return with_ref - without, stats


def test_cross_entropy_to_max_confidence_matches_eq_29():
    p, buf = policy(), buffer("confidence")
    with torch.no_grad():
        h = hand("confidence", buf, p.scores(buf.obs))
        value, stats = regulariser("confidence", p, buf)
    assert value.item() == pytest.approx(BETA["confidence"] * sum(h["ce"]) / 2, rel=1e-5)
    assert stats["ce"] == pytest.approx(sum(h["ce"]) / len(buf), rel=1e-5)
    assert value.item() > 0.05  # g_phi is not g_conf here, so the term is not vacuous


@pytest.mark.parametrize("kind", ["softmax", "topk"])
def test_trajectory_kl_surrogate_matches_eq_24(kind):
    p, buf = policy(), buffer(kind)
    with torch.no_grad():
        h = hand(kind, buf, p.scores(buf.obs))
        kappa = hand_kappa(buf, h)
        assert trajectory_kappa(p, buf, Reference(kind, beta=BETA[kind]), chunk=2).tolist() == pytest.approx(
            kappa, rel=1e-5
        )
        value, stats = regulariser(kind, p, buf)
    expected = BETA[kind] * sum(kappa[int(buf.traj[i])] * h["logp"][i] for i in range(len(buf))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert stats["kl_ref"] == pytest.approx(sum(a - b for a, b in zip(h["logp"], h["logref"])) / len(buf), rel=1e-5)
    assert abs(value.item()) > 1e-3


@pytest.mark.parametrize("kind", ["confidence", "softmax", "topk"])
def test_regulariser_gradient_treats_kappa_as_a_constant(kind):
    """The gradient of the term is beta/G sum_n kappa_g grad log g_phi (KL; kappa under StopGrad) or
    -beta/G sum_n grad log g_phi(a_conf) (CE)."""
    p, buf = policy(), buffer(kind)
    value, _ = regulariser(kind, p, buf)
    got = torch.autograd.grad(value, list(p.parameters()), allow_unused=True)
    ref = Reference(kind, beta=BETA[kind])
    if kind == "confidence":
        target = -p.log_prob(buf.obs, ref.confidence_action(buf.obs, buf.action)).sum()
    else:
        kappa = trajectory_kappa(p, buf, ref, chunk=5)
        target = (kappa[buf.traj] * p.log_prob(buf.obs, buf.action)).sum()
    want = torch.autograd.grad(BETA[kind] * target / 2, list(p.parameters()), allow_unused=True)
    for a, b in zip(got, want):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # float32 noise on near-zero entries (~4e-7)


def test_no_reference_and_zero_beta_add_nothing():
    p, buf = policy(), buffer("softmax")
    idx = torch.arange(len(buf))
    base, stats = upo_loss(p, buf, idx, Reference("none"), 0.2, None, n_traj=2)
    zero, zstats = upo_loss(p, buf, idx, Reference("softmax", beta=0.0), 0.2, None, n_traj=2)
    assert zero.item() == base.item() and "kl_ref" not in zstats and "ce" not in stats


def test_kappa_ratio_is_clamped_for_stale_rollouts():
    """Beyond the paper: the trajectory ratio prod g_phi/g_old is clamped to e^[-5, 5] so a stale rollout cannot
    blow up the KL weight."""
    p = policy()
    buf = buffer("softmax", old_shift=0.0)
    buf.old_log_prob = buf.old_log_prob - 4.0  # three steps: log ratio 12 on trajectory 0, 8 on trajectory 1
    with torch.no_grad():
        h = hand("softmax", buf, p.scores(buf.obs))
        kappa = trajectory_kappa(p, buf, Reference("softmax", beta=0.2), chunk=5)
    d_ref = [sum(h["logp"][i] - h["logref"][i] for i in range(len(buf)) if int(buf.traj[i]) == g) for g in (0, 1)]
    assert kappa.tolist() == pytest.approx([math.exp(5) * (1 + d) for d in d_ref], rel=1e-5)
