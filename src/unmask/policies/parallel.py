"""Jazbec's parallel unmasking policies: the confidence-only network f_phi (§3.2) with a
Bernoulli or a Plackett-Luce action distribution, for any number of tokens per step.

* ``bernoulli``: u_i ~ Bernoulli(sigmoid(b_i / tau_pi)) for each masked position of the
  current block; when no position is drawn, the most confident one is revealed (the
  paper's fallback, enforced in training too). ``greedy`` mode reveals b_i > 0.
* ``plackett-luce``: positions drawn without replacement from softmax(b / tau_pi),
  either until a STOP item is drawn (``count="stop"``: the paper's dynamic Plackett-Luce,
  with a fixed STOP utility or a learned one from the pooled state) or exactly as many
  as the engine's ``--steps`` schedule gives (``count="schedule"``).

With ``alpha_range`` the speed weight alpha of the reward is a policy input (sampled per
group in training), so one checkpoint covers the speed-accuracy frontier: choose alpha at
inference with ``PATH:alpha=A`` or ``--alpha A``. The policies read confidences only, so
they run with any MDM; inputs that are not probabilities are refused.

With ``coupling_rounds`` (beyond the paper, fixed layouts) the confidences are read from the marginals refined
by a learned coupling (:class:`unmask.policies.coupling.MeanFieldCoupling`, pre-trained by
:mod:`unmask.rl.pretrain`), q_i(token_i) instead of p_i(token_i), for the network and for the fallback alike.
Such a policy is bound to the layout (the number of generated positions) it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unmask.config import Config, option
from unmask.policies.state import StepState
from unmask.models.base import MaskedDiffusionModel
from unmask.policies.base import LearnedPolicy, top_k_mask
from unmask.policies.confidence_net import ConfidenceNet, zero_linear
from unmask.policies.coupling import MeanFieldCoupling, check_vocab, coupling_observation
from unmask.policies.distributions import (
    bernoulli_draw,
    bernoulli_entropy,
    bernoulli_log_prob,
    first_draw_entropy,
    gumbel_top_k,
    mask_to_order,
    order_to_mask,
    ordered_top_k,
    plackett_luce_log_prob,
    stop_log_prob,
    stop_order,
)


def check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"the policy temperature tau_pi must be > 0, got {temperature}")
    return temperature


@dataclass
class ParallelConfig(Config):
    """Architecture and inference defaults of a parallel policy (saved as ``config.json``)."""

    d_model: int = option(32, "width of the policy network", low=1)
    n_head: int = option(2, "attention heads of the policy network (must divide --d-model)", low=1)
    base_threshold: float | None = option(0.9, "warm start: a soft threshold rule at this confidence (Fast-dLLM); "
                                          "none = plain init", low=0.0, high=1.0, low_open=True, high_open=True)
    base_threshold_hi: float | None = option(None, "alpha-conditioned policies: the warm start's threshold at "
                                             "alpha = HI (logit-linear in alpha from --base-threshold at LO)",
                                             low=0.0, high=1.0, low_open=True, high_open=True)
    temperature: float = option(1.0, "tau_pi of the policy (a spec's :temperature= overrides it at inference)",
                                low=0.0, low_open=True, flag="--policy-temperature")
    alpha: float = option(1.0, "the reward's alpha in training; for alpha-conditioned policies the default input",
                          low=0.0, derived=True)
    alpha_range: list[float] | None = option(None, "alpha-conditioned policy: alpha ~ U[LO, HI] per group in "
                                             "training and a policy input (Jazbec §3.3)", low=0.0, length=2)
    mdm_name: str = option("", "the MDM it was trained with (for the record: confidences fit any MDM)", derived=True)
    coupling_rounds: int = option(0, "> 0: read confidences refined by a learned pairwise coupling "
                                     "(unmask.policies.coupling), this many mean-field rounds", low=0)
    coupling_length: int = option(0, "positions of the generation region the coupling is learned over",
                                  low=0, derived=True)

    def check(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model (--d-model) {self.d_model} must be divisible by n_head (--n-head) {self.n_head}")
        if self.base_threshold_hi is not None and (self.alpha_range is None or self.base_threshold is None):
            raise ValueError("base_threshold_hi (the warm start's threshold at alpha = HI) needs an alpha range "
                             "and a base_threshold (the one at alpha = LO)")
        if self.alpha_range is not None and not self.alpha_range[0] <= self.alpha <= self.alpha_range[1]:
            raise ValueError(f"alpha {self.alpha:g} lies outside the alpha range {self.alpha_range}")


@dataclass
class PlackettLuceConfig(ParallelConfig):
    count: str = option("stop", "how many positions a step reveals: stop = draw until STOP (dynamic), schedule = "
                                "the engine's tokens per step (--steps)", choices=("stop", "schedule"),
                        flag="--pl-count")
    stop_logit: float | None = option(0.0, "fixed STOP utility; none = learned from the pooled state")


class ParallelPolicy(nn.Module, LearnedPolicy):
    """Shared observation, action loop and options; subclasses give the action distribution."""

    config_type: type = ParallelConfig
    default_mode = "sample"  # the paper evaluates by sampling at tau_pi
    OPTIONS = {"mode": "greedy|sample", "temperature": "FLOAT > 0 (tau_pi)",
               "alpha": "FLOAT within the trained alpha range (alpha-conditioned policies)"}

    def __init__(self, config: ParallelConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.name = self.kind
        self.mode = self.default_mode
        self.temperature = config.temperature
        self.alpha: float | torch.Tensor = config.alpha  # a tensor (batch rows) during training rollouts
        self.net = ConfidenceNet(config.d_model, config.n_head, config.base_threshold, config.alpha_range,
                                 config.base_threshold_hi)
        if config.coupling_rounds:
            self.coupling = MeanFieldCoupling(config.coupling_length, config.coupling_rounds)

    @property
    def conditioned(self) -> bool:
        return self.config.alpha_range is not None

    def set_option(self, key: str, value: str) -> None:
        if key == "temperature":
            self.temperature = check_temperature(float(value))
        elif key == "alpha":
            self.set_alpha(float(value))
        else:
            super().set_option(key, value)

    def set_alpha(self, alpha: float) -> None:
        if not self.conditioned:
            raise ValueError(f"this {self.kind} policy was trained at the fixed alpha {self.config.alpha:g}; "
                             "alpha is an input only of policies trained with --alpha-range LO,HI")
        lo, hi = self.config.alpha_range
        if not lo <= alpha <= hi:
            raise ValueError(f"alpha {alpha:g} lies outside the range the policy was trained for [{lo:g}, {hi:g}]")
        self.alpha = alpha

    def observe(self, state: StepState) -> dict[str, torch.Tensor]:
        """Confidence, mask and block flags, diffusion time (and alpha): nothing MDM-specific."""
        conf = state.confidence.float()
        if not torch.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1 + 1e-4:
            raise ValueError(f"{self.kind} policy reads MDM confidences (probabilities in [0, 1]); this MDM gave "
                             f"values in [{conf.min().item():.3g}, {conf.max().item():.3g}]")
        obs = {"confidence": conf, "masked": state.masked, "allowed": state.candidates,
               "time": state.masked_fraction.float()}
        if self.config.coupling_rounds:
            obs.update(coupling_observation(state))
        if self.conditioned:
            alpha = self.alpha
            obs["alpha"] = alpha.to(conf.device)[state.rows] if isinstance(alpha, torch.Tensor) \
                else torch.full_like(obs["time"], float(alpha))
        return obs

    def confidence(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The confidences the policy reads: p_i(token_i), or q_i(token_i) through the coupling."""
        return self.coupling.token_log_prob(obs).exp() if self.config.coupling_rounds else obs["confidence"]

    def network(self, obs: dict[str, torch.Tensor],
                confidence: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """f_phi's logits (n, L) and pooled state, on the confidences of :meth:`confidence` (pass them as
        ``confidence`` when already computed)."""
        if not self.config.coupling_rounds:
            return self.net(obs)
        return self.net({**obs, "confidence": self.confidence(obs) if confidence is None else confidence})

    def scores(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor | None = None) -> torch.Tensor:
        """Utilities b / tau_pi per position (n, L), finite everywhere (``obs["allowed"]`` restricts)."""
        return self.network(obs, confidence)[0] / self.temperature

    def draw(self, scores: torch.Tensor, obs: dict[str, torch.Tensor], state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, scores: torch.Tensor, obs: dict[str, torch.Tensor], reveal: torch.Tensor) -> torch.Tensor:
        """The action that reveals exactly ``reveal`` (to score another policy's choice, e.g. an expert's)."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = self.observe(state)
        confidence = self.confidence(obs)  # once: the network and the fallback both read it
        scores = self.scores(obs, confidence)
        action = self.draw(scores, obs, state)
        reveal = order_to_mask(action, state.candidates.shape[1])
        fallback = top_k_mask(confidence, state.candidates, torch.ones_like(state.num_transfer))
        reveal = reveal | (fallback & ~reveal.any(1, keepdim=True))
        data = {**obs, "action": action, "old_log_prob": self.log_prob(obs, action, scores)} if record else {}
        return reveal, data

    @classmethod
    def for_model(cls, model: MaskedDiffusionModel, **kwargs) -> "ParallelPolicy":
        if kwargs.get("coupling_rounds"):
            check_vocab(model, "policies with a coupling", "Train without --coupling-rounds for this model")
        return cls(cls.config_type(mdm_name=model.name, **kwargs))


class BernoulliPolicy(ParallelPolicy):
    """Independent Bernoulli reveal decisions (Jazbec §3.2)."""

    kind = "bernoulli"

    def draw(self, scores: torch.Tensor, obs: dict[str, torch.Tensor], state: StepState) -> torch.Tensor:
        if self.mode == "greedy":
            return mask_to_order((scores > 0) & obs["allowed"])
        return bernoulli_draw(scores, obs["allowed"], state.draws)

    def encode(self, scores: torch.Tensor, obs: dict[str, torch.Tensor], reveal: torch.Tensor) -> torch.Tensor:
        return mask_to_order(reveal)

    def log_prob(self, obs: dict[str, torch.Tensor], action: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log P(u) of the drawn set (the empty set when the fallback revealed a position)."""
        return bernoulli_log_prob(self.scores(obs) if scores is None else scores, obs["allowed"], action)

    def entropy(self, obs: dict[str, torch.Tensor], scores: torch.Tensor | None = None) -> torch.Tensor:
        return bernoulli_entropy(self.scores(obs) if scores is None else scores, obs["allowed"])


class PlackettLucePolicy(ParallelPolicy):
    """Ordered draws without replacement, with a STOP item or the schedule's count (Jazbec §3.2)."""

    kind = "plackett-luce"
    config_type = PlackettLuceConfig

    def __init__(self, config: PlackettLuceConfig) -> None:
        super().__init__(config)
        self.stops = config.count == "stop"
        self.stop_head = zero_linear(config.d_model, 1) if self.stops and config.stop_logit is None else None

    def scores(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor | None = None) -> torch.Tensor:
        """Utilities (n, L) / tau_pi, with the STOP utility appended as column L when ``count="stop"``."""
        logits, pooled = self.network(obs, confidence)
        if self.stops:
            stop = self.stop_head(pooled) if self.stop_head is not None else logits.new_full((len(logits), 1), self.config.stop_logit)
            logits = torch.cat([logits, stop], 1)
        return logits / self.temperature

    def draw(self, scores: torch.Tensor, obs: dict[str, torch.Tensor], state: StepState) -> torch.Tensor:
        if self.mode == "greedy":
            rank = ordered_top_k
        else:
            def rank(s: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
                return gumbel_top_k(s, allowed, k, state.draws)
        if self.stops:
            return stop_order(scores, obs["allowed"], rank)
        return rank(scores, obs["allowed"], state.num_transfer)

    def encode(self, scores: torch.Tensor, obs: dict[str, torch.Tensor], reveal: torch.Tensor) -> torch.Tensor:
        """The positions of ``reveal`` in decreasing utility: the most likely order of that set."""
        return ordered_top_k(scores[:, : reveal.shape[1]], reveal, reveal.sum(1))

    def log_prob(self, obs: dict[str, torch.Tensor], action: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.scores(obs) if scores is None else scores
        if self.stops:
            return stop_log_prob(scores, obs["allowed"], action)
        return plackett_luce_log_prob(scores, obs["allowed"], action)

    def entropy(self, obs: dict[str, torch.Tensor], scores: torch.Tensor | None = None) -> torch.Tensor:
        """Entropy of the first draw."""
        return first_draw_entropy(self.scores(obs) if scores is None else scores, obs["allowed"])
