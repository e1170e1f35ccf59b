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
from unmask.config import Config, option
from unmask.policies.state import StepState
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
class UPOConfig(Config):
    """Architecture of g_phi plus the identity of the MDM it reads."""

    feature_size: int = option(0, "D of the MDM's hidden features", low=0, derived=True)
    d_model: int = option(32, "width of phi_TF, the transformer layer over the MDM features (UPO App. B.1)", low=1)
    n_head: int = option(4, "attention heads of phi_TF (must divide --d-model)", low=1)
    prob_features: int = option(5, "K of TopK(p), the probability features of Eq. 21", low=1)
    mlp_hidden: int = option(64, "hidden width of phi_MLP", low=1)
    base_temperature: float | None = option(0.05, "tau0 of the log-confidence base score (start as the "
                                            "softmax-confidence reference); none = no base term", low=0.0,
                                            low_open=True)
    top_k: int | None = option(None, "restrict to the K most confident candidates (Top-K realisation, Eq. 27; set "
                                     "by --reference topk)", low=1, derived=True)
    coupling_rounds: int = option(0, "> 0: the base score reads marginals refined by a learned pairwise coupling "
                                     "(unmask.policies.coupling), this many mean-field rounds", low=0)
    coupling_length: int = option(0, "positions of the generation region the coupling is learned over",
                                  low=0, derived=True)
    mdm_name: str = option("", "the MDM it was trained with", derived=True)
    mdm_vocab_size: int = option(0, "vocabulary size of that MDM", low=0, derived=True)
    mdm_mask_id: int = option(0, "mask token id of that MDM", low=0, derived=True)

    def check(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model (--d-model) {self.d_model} must be divisible by n_head (--n-head) {self.n_head}")
        if self.coupling_rounds and self.base_temperature is None:
            raise ValueError("a coupling (--coupling-rounds) refines the base score log(confidence) / tau0; it needs a "
                             "base temperature (--base-temperature)")


class UPOPolicy(nn.Module, LearnedPolicy):
    """UPO's g_phi (Fig. 2). ``mode``: ``"sample"`` draws from g_phi (training rollouts),
    ``"greedy"`` takes its argmax; ``sigma`` > 0 adds N(0, sigma^2) to the probabilities
    before the argmax for multi-shot sampling (UPO App. D).

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
        self.inp = nn.Linear(c.feature_size, c.d_model)
        self.tf = nn.TransformerEncoderLayer(c.d_model, c.n_head, 4 * c.d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(c.d_model + c.prob_features, c.mlp_hidden), nn.GELU(),
            nn.Linear(c.mlp_hidden, c.mlp_hidden), nn.GELU(),
            nn.Linear(c.mlp_hidden, 1),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        if c.coupling_rounds:
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
            obs.update(coupling_observation(state))
        return obs

    def scores(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """h_phi(x_n) per position (n, Lg); -inf outside the allowed set."""
        s = self.mlp(torch.cat([self.tf(self.inp(obs["hidden"])), obs["top_probs"]], -1)).squeeze(-1)
        if self.config.coupling_rounds:
            s = s + self.coupling.token_log_prob(obs) / self.config.base_temperature
        elif self.config.base_temperature is not None:
            s = s + obs["confidence"].clamp_min(1e-12).log() / self.config.base_temperature
        return s.masked_fill(~obs["allowed"], float("-inf"))

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
            order = gumbel_top_k(scores, obs["allowed"], k, state.draws)
        elif self.sigma > 0:
            probs = scores.softmax(-1)
            noise = state.draws.normal() * self.sigma
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
        if kwargs.get("coupling_rounds"):
            check_vocab(model, "the coupling", "Use --coupling-rounds 0 for this model")
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
    policy = POLICY_KINDS[kind](CONFIG_TYPES[kind].from_dict(spec, source=str(directory / CONFIG)))
    load_state_into(policy, load_tensors(directory / WEIGHTS), directory)
    run = directory.resolve()
    policy.name = f"{kind}:{run.parent.name}/{run.name}" if run.name in ("best", "last") else f"{kind}:{run.name}"
    policy.record = {k: v for k, v in meta.items() if k != "policy"}
    return policy.eval()
