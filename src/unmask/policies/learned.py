"""Learned unmasking policies: UPO's position scorer g_phi (UPO §3.3, App. B.1).

g_phi reads the frozen MDM's features H_n, refines them with a one-layer
transformer (phi_TF), concatenates the Top-K token probabilities of each
position (Eq. 21), and maps the result through a 3-layer MLP (phi_MLP) to a score
h_phi per position. The policy is the softmax of the scores over the masked
positions of the current block (Eq. 9/20) or, for the Top-K realisation, over
the K most confident of them only (Eq. 27).

Following "start as the reference", the score is ``log(confidence) / tau0`` plus
a learned residual whose last layer is zero-initialised, so an untrained policy
already is the softmax-confidence reference (``tau0=None`` drops the base term:
then an untrained Top-K policy is uniform over the Top-K set, as in the paper).
Several tokens per step are drawn without replacement (Plackett-Luce), one per
step being the paper's setting.

:data:`POLICY_KINDS` and :func:`load_policy` also serve Jazbec's confidence-only
parallel policies (``bernoulli``, ``plackett-luce``: :mod:`unmask.policies.parallel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unmask.checkpoint import CONFIG, WEIGHTS, load_json, load_state_into, load_tensors
from unmask.engine import StepState
from unmask.models.base import MaskedDiffusionModel
from unmask.policies.base import LearnedPolicy, top_k_mask
from unmask.policies.coupling import MeanFieldCoupling, check_vocab, coupling_observation
from unmask.policies.distributions import (
    first_draw_entropy,
    gumbel_top_k,
    order_to_mask,
    ordered_top_k,
    plackett_luce_log_prob,
)
from unmask.policies.parallel import BernoulliPolicy, ParallelConfig, PlackettLuceConfig, PlackettLucePolicy


@dataclass
class UPOConfig:
    """Architecture of g_phi plus the identity of the MDM it reads."""

    feature_size: int  # D of the MDM's hidden features
    d_model: int = 32
    n_head: int = 4
    prob_features: int = 5  # K of TopK(p) in Eq. 21
    mlp_hidden: int = 64
    base_temperature: float | None = 0.05  # tau0 of the log-confidence base score
    top_k: int | None = None  # restrict to the K most confident candidates (Top-K realisation, Eq. 27)
    token_probs: bool = False  # also feed phi_TF every position's full distribution (see UPOPolicy)
    coupling_rounds: int = 0  # > 0: the base score reads marginals refined by a MeanFieldCoupling (see UPOPolicy)
    coupling_length: int = 0  # positions of the generation region the coupling is learned over
    mdm_name: str = ""
    mdm_vocab_size: int = 0
    mdm_mask_id: int = 0


class UPOPolicy(nn.Module, LearnedPolicy):
    """UPO's g_phi (Fig. 2). ``mode``: ``"sample"`` draws from g_phi (training rollouts),
    ``"greedy"`` takes its argmax; ``sigma`` > 0 adds N(0, sigma^2) to the probabilities
    before the argmax for multi-shot sampling (UPO App. D).

    ``token_probs`` (beyond the paper, for small vocabularies) concatenates to H_n each position's whole
    distribution P_i = p_theta(x_0 | x_n)_i over the vocabulary, or the one-hot of its token once revealed.
    Eq. 21's Top-K values say how sure the MDM is but not *of which token*. It also adds an agreement
    attention whose per-head output sum_{j != i} A_ij <P_i, P_j> (fed to phi_MLP) is the mass the attended
    positions put on what position i wants, e.g. two cells of a sudoku row that both want the same digit.

    ``coupling_rounds`` (beyond the paper, fixed layouts) computes the base score from the marginals refined by
    a learned pairwise coupling (:class:`unmask.policies.coupling.MeanFieldCoupling`): log q_i(token_i) / tau0
    instead of log(confidence_i) / tau0. It starts near the identity, so the policy still starts as its
    reference; :mod:`unmask.rl.pretrain` learns it from the policy's own rollouts."""

    kind = "upo"
    needs_hidden = True
    OPTIONS = {"sigma": "FLOAT >= 0 (Gaussian noise, UPO App. D)", "mode": "greedy|sample"}

    def __init__(self, config: UPOConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.name = "upo"
        self.mode = "greedy"
        self.sigma = 0.0
        c = config
        self.inp = nn.Linear(c.feature_size + (c.mdm_vocab_size if c.token_probs else 0), c.d_model)
        self.tf = nn.TransformerEncoderLayer(c.d_model, c.n_head, 4 * c.d_model, dropout=0.0, batch_first=True, norm_first=True)
        if c.token_probs:
            self.agree_q = nn.Linear(c.d_model, c.d_model)
            self.agree_k = nn.Linear(c.d_model, c.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(c.d_model + c.prob_features + (c.n_head if c.token_probs else 0), c.mlp_hidden), nn.GELU(),
            nn.Linear(c.mlp_hidden, c.mlp_hidden), nn.GELU(),
            nn.Linear(c.mlp_hidden, 1),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        if c.coupling_rounds:
            if c.base_temperature is None:
                raise ValueError("a coupling refines the base score log(confidence) / tau0; it needs a base temperature")
            self.coupling = MeanFieldCoupling(c.coupling_length, c.coupling_rounds)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.mode == "sample" or self.sigma > 0

    def set_option(self, key: str, value: str) -> None:
        if key == "sigma":
            if not float(value) >= 0:
                raise ValueError(f"sigma must be >= 0, got {value}")
            self.sigma = float(value)
        else:
            super().set_option(key, value)

    # ----- observation (what Algorithm 2 stores per step) -----
    def observe(self, state: StepState) -> dict[str, torch.Tensor]:
        if state.hidden is None:
            raise ValueError("UPO policy needs the MDM's hidden features; the model returned none")
        if state.hidden.shape[-1] != self.config.feature_size:
            raise ValueError(
                f"UPO policy was trained on features of size {self.config.feature_size} "
                f"(MDM {self.config.mdm_name!r}), this MDM gives {state.hidden.shape[-1]}; use a policy trained for this model"
            )
        k = self.config.prob_features
        top = state.probs.topk(min(k, state.probs.shape[-1]), dim=-1).values
        if top.shape[-1] < k:
            top = F.pad(top, (0, k - top.shape[-1]))
        allowed = state.candidates
        if self.config.top_k is not None:
            allowed = top_k_mask(state.confidence, allowed, torch.full_like(state.num_transfer, self.config.top_k))
        obs = {"hidden": state.hidden.float(), "top_probs": top, "confidence": state.confidence, "allowed": allowed}
        if self.config.coupling_rounds:
            obs.update(coupling_observation(state))  # token_probs among them
        elif self.config.token_probs:
            obs["token_probs"] = state.token_probs.float()
        return obs

    def scores(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """h_phi(x_n) per position (n, Lg); -inf outside the allowed set."""
        if self.config.token_probs:
            z = self.inp(torch.cat([obs["hidden"], obs["token_probs"]], -1))
            feats = [self.tf(z), obs["top_probs"], self.agreement(z, obs["token_probs"])]
        else:
            feats = [self.tf(self.inp(obs["hidden"])), obs["top_probs"]]
        s = self.mlp(torch.cat(feats, -1)).squeeze(-1)
        if self.config.coupling_rounds:
            s = s + self.coupling.token_log_prob(obs) / self.config.base_temperature
        elif self.config.base_temperature is not None:
            s = s + obs["confidence"].clamp_min(1e-12).log() / self.config.base_temperature
        return s.masked_fill(~obs["allowed"], float("-inf"))

    def agreement(self, z: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Per head, sum_{j != i} A_ij <P_i, P_j> (n, Lg, n_head): A from ``z``, P = ``probs``."""
        n, L, d = z.shape
        H = self.config.n_head
        q = self.agree_q(z).view(n, L, H, d // H).transpose(1, 2)
        k = self.agree_k(z).view(n, L, H, d // H).transpose(1, 2)
        self_pair = torch.eye(L, dtype=torch.bool, device=z.device)
        logits = (q @ k.transpose(-1, -2) / (d // H) ** 0.5).masked_fill(self_pair, float("-inf"))
        attn = logits.softmax(-1).nan_to_num(0.0)  # a one-position region attends to nothing
        return (attn * (probs @ probs.transpose(-1, -2))[:, None]).sum(-1).transpose(1, 2)

    def log_prob(self, obs: dict[str, torch.Tensor], action: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        """log g_phi(a_n | x_n) of a recorded ordered action (n, k); ``scores``: :meth:`scores` if already computed."""
        return plackett_luce_log_prob(self.scores(obs) if scores is None else scores, obs["allowed"], action)

    def entropy(self, obs: dict[str, torch.Tensor], scores: torch.Tensor | None = None) -> torch.Tensor:
        return first_draw_entropy(self.scores(obs) if scores is None else scores, obs["allowed"])

    @torch.no_grad()
    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = self.observe(state)
        scores = self.scores(obs)
        k = state.num_transfer
        if self.mode == "sample":
            order = gumbel_top_k(scores, obs["allowed"], k, state.generator)
        elif self.sigma > 0:
            probs = scores.softmax(-1)
            noise = torch.randn(probs.shape, generator=state.generator, device=probs.device) * self.sigma
            order = ordered_top_k((probs + noise).masked_fill(~obs["allowed"], float("-inf")), obs["allowed"], k)
        else:
            order = ordered_top_k(scores, obs["allowed"], k)
        reveal = order_to_mask(order, scores.shape[1])
        data = {}
        if record:
            data = {**obs, "action": order, "old_log_prob": plackett_luce_log_prob(scores, obs["allowed"], order)}
        return reveal, data

    def check_model(self, model: MaskedDiffusionModel) -> None:
        c = self.config
        if (model.vocab_size, model.hidden_size, model.mask_id) != (c.mdm_vocab_size, c.feature_size, c.mdm_mask_id):
            raise ValueError(
                f"policy was trained with MDM {c.mdm_name!r} (vocab {c.mdm_vocab_size}, features {c.feature_size}, "
                f"mask id {c.mdm_mask_id}); model {model.name!r} has vocab {model.vocab_size}, features "
                f"{model.hidden_size}, mask id {model.mask_id}. Evaluate it with --model {c.mdm_name} or train one for this model"
            )

    @classmethod
    def for_model(cls, model: MaskedDiffusionModel, **kwargs) -> "UPOPolicy":
        if kwargs.get("token_probs") or kwargs.get("coupling_rounds"):
            check_vocab(model, "token_probs and the coupling",
                        "Use the Top-K probabilities (--prob-input topk, --coupling-rounds 0) for this model")
        return cls(UPOConfig(feature_size=model.hidden_size, mdm_name=model.name, mdm_vocab_size=model.vocab_size,
                             mdm_mask_id=model.mask_id, **kwargs))


POLICY_KINDS: dict[str, type] = {"upo": UPOPolicy, "bernoulli": BernoulliPolicy, "plackett-luce": PlackettLucePolicy}
CONFIG_TYPES: dict[str, type] = {"upo": UPOConfig, "bernoulli": ParallelConfig, "plackett-luce": PlackettLuceConfig}


def load_policy(directory: str | Path) -> LearnedPolicy:
    """Load a learned policy checkpoint (``model.safetensors`` + ``config.json``)."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"no policy checkpoint at {directory} (expected {CONFIG} and {WEIGHTS})")
    meta = load_json(directory / CONFIG)
    if "policy" not in meta:
        raise ValueError(f"{directory / CONFIG} has no 'policy' section: this is not a policy checkpoint (an MDM?)")
    spec = dict(meta["policy"])
    kind = spec.pop("kind", None)
    if kind not in POLICY_KINDS:
        raise ValueError(f"{directory}: unknown policy kind {kind!r}; known kinds: {', '.join(POLICY_KINDS)}")
    policy = POLICY_KINDS[kind](CONFIG_TYPES[kind](**spec))
    load_state_into(policy, load_tensors(directory / WEIGHTS), directory)
    run = directory.resolve()
    policy.name = f"{kind}:{run.parent.name}/{run.name}" if run.name in ("best", "last") else f"{kind}:{run.name}"
    return policy.eval()
