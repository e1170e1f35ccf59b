"""Learned unmasking policies: one mechanism, a scorer x an action distribution x an optional coupling and planner.

    pi_phi(a | x_n) = D(a | (u_phi(c(x_n), x_n) + r_psi(x_n)) / tau_pi)

``u_phi`` is a scorer (:mod:`unmask.policies.scorers`: UPO's g_phi over the MDM's features, Jazbec's f_phi
over confidences), ``D`` an action distribution (:mod:`unmask.policies.distributions`: Plackett-Luce over the
schedule's count or until STOP, Bernoulli) and ``c`` the confidences the scorer reads: the MDM's
p_i(token_i), or q_i(token_i) from a learned coupling (:mod:`unmask.policies.coupling`, beyond both papers), and
``r_psi`` an optional planner's residual over the whole answer (:mod:`unmask.policies.planner`, zero at start).
The kinds are compositions of these parts (:data:`KINDS`):

=============== ======== ====================================== ============
kind            scorer   action                                 default mode
=============== ======== ====================================== ============
upo             g_phi    Plackett-Luce, the schedule's count    greedy
bernoulli       f_phi    Bernoulli                              sample
plackett-luce   f_phi    Plackett-Luce, until STOP or the count sample
=============== ======== ====================================== ============

Every step reveals at least one position: where the draw chose none (a Bernoulli draw of the empty set, a
zero count from the schedule), the most confident candidate (Jazbec's fallback), a deterministic function
of the state, so the recorded log-probability stays that of the draw.

Decoding options (a spec's ``PATH:key=value``, :meth:`LearnedPolicy.with_options`): ``mode`` greedy|sample,
``temperature`` (tau_pi), ``sigma`` (fixed-count Plackett-Luce: Gaussian noise on the probabilities before
the argmax, UPO App. D), ``alpha`` (the default speed weight of alpha-conditioned policies) and, for a policy
trained by imitation, ``bound`` (reveal as many positions as the calibrated probability that all of them are
right allows, :meth:`LearnedPolicy.bound_count`). Options give a
view that shares the parameters; nothing mutates a policy in place. Per-row inputs (alpha in training, one
per group) reach the policy through the engine's :attr:`StepState.inputs`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unmask.core.checkpoint import (
    CONFIG,
    MANIFEST,
    WEIGHTS,
    TrainingState,
    load_json,
    load_state_into,
    load_tensors,
    save_checkpoint,
    verify_checkpoint,
)
from unmask.core.config import Config, kind_of
from unmask.core.hub import HubMixin
from unmask.engine.policy import Capabilities, Policy
from unmask.engine.state import StepState
from unmask.models.base import MaskedDiffusionModel
from unmask.policies.base import top_k_mask
from unmask.policies.confidence_net import ConfidenceNet
from unmask.policies.configs import CONFIG_TYPES, DEFAULT_ALPHA, ParallelConfig, PlackettLuceConfig, UPOConfig
from unmask.policies.coupling import MeanFieldCoupling, check_vocab, coupling_observation
from unmask.policies.distributions import ActionDistribution, Bernoulli, PlackettLuce, order_to_mask
from unmask.policies.planner import Planner
from unmask.policies.scorers import Scorer, UPOScorer


@dataclass(frozen=True)
class Kind:
    """A named composition (its config type is ``CONFIG_TYPES[name]``): how the config builds the scorer and
    the action distribution, the config fields taken from the MDM, and how it decodes unless told otherwise."""

    scorer: Callable[[Config], Scorer]
    action: Callable[[Config], ActionDistribution]
    model_fields: Callable[[MaskedDiffusionModel], dict]
    default_mode: str


def _confidence_net(c: ParallelConfig) -> ConfidenceNet:
    return ConfidenceNet(c.d_model, c.n_head, c.base_threshold, c.alpha_range, c.base_threshold_hi)


def _stop(c: PlackettLuceConfig) -> float | str | None:
    """The STOP item of a Plackett-Luce config: none (the schedule's count), learned or fixed."""
    return None if c.count == "schedule" else "learned" if c.stop_logit is None else c.stop_logit


KINDS: dict[str, Kind] = {
    "upo": Kind(
        UPOScorer,
        lambda c: PlackettLuce(),
        lambda m: {
            "feature_size": m.hidden_size,
            "mdm_name": m.name,
            "mdm_vocab_size": m.vocab_size,
            "mdm_mask_id": m.mask_id,
        },
        "greedy",
    ),
    "bernoulli": Kind(_confidence_net, lambda c: Bernoulli(), lambda m: {"mdm_name": m.name}, "sample"),
    "plackett-luce": Kind(
        _confidence_net, lambda c: PlackettLuce(_stop(c), c.d_model), lambda m: {"mdm_name": m.name}, "sample"
    ),
}
MODES = ("greedy", "sample")


class LearnedPolicy(nn.Module, Policy, HubMixin):
    """A scorer, an action distribution and an optional coupling, built from a config of one of
    :data:`KINDS` (see the module docstring); safetensors checkpoints, also through the Hugging Face Hub
    (``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``, :mod:`unmask.core.hub`)."""

    record: dict = {}  # what the loaded checkpoint's config.json held besides the policy (train recipe, metrics)

    checkpoint_section = "policy"

    @classmethod
    def load_checkpoint(cls, directory: Path) -> LearnedPolicy:
        """The policy of a checkpoint directory (:func:`load_policy`)."""
        return load_policy(directory)

    def __init__(self, config: UPOConfig | ParallelConfig | PlackettLuceConfig) -> None:
        nn.Module.__init__(self)
        self.kind = kind_of(config, CONFIG_TYPES)
        kind = KINDS[self.kind]
        self.config = config
        self.scorer = kind.scorer(config)
        self.action = kind.action(config)
        self.coupling = (
            MeanFieldCoupling(config.coupling_length, config.coupling_rounds) if config.coupling_rounds else None
        )
        self.planner = self._build_planner(
            torch.zeros(config.planner_cliques, config.planner_length) if config.planner_cliques else None
        )
        self.name = self.kind
        self.default_mode = self.mode = kind.default_mode
        self.temperature = float(getattr(config, "temperature", 1.0))
        self.sigma = 0.0
        self.bound = 0.0
        self.alpha = getattr(config, "alpha", None)

    def _build_planner(self, cliques: torch.Tensor | None) -> Planner | None:
        """The config's planner (None without one); ``cliques``: its (K, L) clique membership (zeros until the
        saved buffer is loaded)."""
        c = self.config
        if not c.planner:
            return None
        learned = c.planner_pairs == "learned"
        return Planner(
            c.planner_length,
            c.pair_channels if learned else 0,
            c.planner_layers,
            c.planner_d_model,
            c.planner_heads,
            cliques if not learned else None,
            c.planner_slots,
        )

    def load_calibration(self, directory: str | Path) -> None:
        """Take the calibration of the policy checkpoint ``directory`` (``config.calibration``: learned by
        imitation, not a setting), the one its weights were saved with: a resumed run's."""
        saved = load_json(Path(directory) / CONFIG)["policy"].get("calibration", [])
        self.config = replace(self.config, calibration=list(saved))

    def use_cliques(self, members: torch.Tensor) -> None:
        """Give the planner (``planner_pairs="cliques"``) the clique membership (K, L) it reads
        (:func:`unmask.policies.planner.cliques` of the frozen coupling): a new, untrained planner, its K and
        slots (the most cliques holding one position) recorded in the config so a checkpoint reloads it."""
        slots = int(members.sum(0).max())
        self.config = replace(self.config, planner_cliques=len(members), planner_slots=slots)
        self.planner = self._build_planner(members.float())

    @classmethod
    def for_model(cls, kind: str, model: MaskedDiffusionModel, **settings) -> LearnedPolicy:
        """An untrained policy of ``kind`` for ``model`` (the config fields it derives from the MDM filled in; a
        speed-aware kind's default alpha input, when not given, is the trainer's default :data:`DEFAULT_ALPHA`)."""
        if kind not in KINDS:
            raise ValueError(f"unknown policy kind {kind!r}; known kinds: {', '.join(KINDS)}")
        if settings.get("coupling_rounds"):
            check_vocab(model, "the coupling", "Use --coupling-rounds 0 for this model")
        if settings.get("planner"):
            check_vocab(model, "the planner", "Drop --planner for this model")
        config_type = CONFIG_TYPES[kind]
        if config_type.speed_aware:
            settings.setdefault("alpha", DEFAULT_ALPHA)
        return cls(config_type(**KINDS[kind].model_fields(model), **settings))

    # ----- what the engine asks -----
    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """Hidden features when the scorer reads them (UPO's g_phi), random when sampling or noised (UPO App. D),
        alpha as an input when trained with an alpha range (Jazbec §3.3)."""
        return Capabilities(
            needs_hidden=self.scorer.needs_hidden,
            stochastic=self.mode == "sample" or self.sigma > 0,
            conditioned=self.scorer.conditioned,
        )

    # ----- decoding options -----
    @property
    def OPTIONS(self) -> dict[str, str]:  # type: ignore[override]
        """The options of :meth:`with_options` (and of specs) this policy takes, with their values."""
        options = {"mode": "greedy|sample"}
        if hasattr(self.config, "temperature"):
            options["temperature"] = "FLOAT > 0 (tau_pi)"
        if self.action.fixed_count:
            options["sigma"] = "FLOAT >= 0 (Gaussian noise, UPO App. D)"
        if hasattr(self.config, "alpha"):
            options["alpha"] = "FLOAT within the trained alpha range (alpha-conditioned policies)"
        options["bound"] = "FLOAT in [0, 1) (greedy; a policy trained by imitation: the chance any reveal is wrong)"
        return options

    def with_options(self, **options: str | float) -> LearnedPolicy:
        """A view of this policy (the same parameters) that decodes with ``options`` (see :attr:`OPTIONS`)."""
        view = copy.copy(self)
        for key, value in options.items():
            view._set_option(key, value)
        if view.bound and (view.mode == "sample" or view.sigma > 0):
            raise ValueError("bound=EPS is a greedy decoding rule; drop mode=sample / sigma (or the bound)")
        return view

    def _set_option(self, key: str, value: str | float) -> None:
        if key not in self.OPTIONS:
            raise ValueError(
                f"unknown option '{key}={value}'; {self.kind} policies take "
                + ", ".join(f"{k}={v}" for k, v in self.OPTIONS.items())
            )
        if key == "mode":
            if value not in MODES:
                raise ValueError(f"mode takes {self.OPTIONS['mode']}, got {value!r}")
            self.mode = str(value)
            return
        number = _number(key, value, self.OPTIONS[key])
        if key == "temperature":
            if not number > 0:
                raise ValueError(f"the policy temperature tau_pi must be > 0, got {value}")
            self.temperature = number
        elif key == "sigma":
            if not number >= 0:
                raise ValueError(f"sigma must be >= 0, got {value}")
            self.sigma = number
        elif key == "bound":
            if not 0 <= number < 1:
                raise ValueError(f"bound is a probability in [0, 1), got {value}")
            if number and not self.config.calibration:
                raise ValueError(
                    "bound=EPS reads the calibrated probability that a position's token is right, which only a "
                    "policy trained by imitation has (train-policy --imitation-rounds N); this one has none"
                )
            self.bound = number
        else:
            if not self.capabilities.conditioned:
                raise ValueError(
                    f"this {self.kind} policy was trained at the fixed alpha {self.config.alpha:g}; "
                    "alpha is an input only of policies trained with --alpha-range LO,HI"
                )
            lo, hi = self.config.alpha_range
            if not lo <= number <= hi:
                raise ValueError(f"alpha {number:g} lies outside the range the policy was trained for [{lo:g}, {hi:g}]")
            self.alpha = number

    def check_model(self, model: MaskedDiffusionModel) -> None:
        """Raise when ``model``'s outputs do not fit the policy's inputs."""
        self.scorer.check_model(model)

    # ----- the policy (what Algorithm 2 stores and the update recomputes) -----
    def observe(self, state: StepState) -> dict[str, torch.Tensor]:
        """The scorer's observation, plus the coupling's inputs and, for alpha-conditioned policies, each
        row's alpha (``state.inputs["alpha"]``, else the policy's default)."""
        obs = self.scorer.observe(state)
        if self.coupling is not None or self.planner is not None:
            obs.update(coupling_observation(state))
        if self.capabilities.conditioned:
            alpha = state.inputs.get("alpha")
            obs["alpha"] = (
                alpha
                if alpha is not None
                else torch.full((state.masked.shape[0],), float(self.alpha), device=state.masked.device)
            )
        return obs

    def read_confidence(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The confidences the scorer reads (n, L): p_i(token_i), or q_i(token_i) through the coupling; as
        logs where the scorer takes logs."""
        log = self.scorer.reads_log_confidence
        if self.coupling is None:
            return obs["confidence"].clamp_min(1e-12).log() if log else obs["confidence"]
        log_q = self.coupling.token_log_prob(obs)
        return log_q if log else log_q.exp()

    def scores(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor | None = None) -> torch.Tensor:
        """Utilities / tau_pi (n, L, plus a STOP column where the action has one); ``confidence``:
        :meth:`read_confidence` if already computed."""
        confidence = self.read_confidence(obs) if confidence is None else confidence
        logits, pooled = self.scorer(obs, confidence)
        if self.planner is not None:
            logits = logits + self.planner(obs, confidence)
        return self.action.utilities(logits, pooled) / self.temperature

    def log_prob(
        self, obs: dict[str, torch.Tensor], action: torch.Tensor, scores: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log pi_phi(a_n | x_n) of a recorded action (n, k); ``scores``: :meth:`scores` if already computed."""
        return self.action.log_prob(self.scores(obs) if scores is None else scores, obs["allowed"], action)

    def entropy(self, obs: dict[str, torch.Tensor], scores: torch.Tensor | None = None) -> torch.Tensor:
        return self.action.entropy(self.scores(obs) if scores is None else scores, obs["allowed"])

    def encode(self, scores: torch.Tensor, reveal: torch.Tensor) -> torch.Tensor:
        """The action that reveals exactly ``reveal`` (n, L) (to score an expert's choice, Jazbec §3.4)."""
        return self.action.encode(scores, reveal)

    @torch.no_grad()
    def act(self, state: StepState, record: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = self.observe(state)
        confidence = self.read_confidence(obs)  # once: the scorer and the fallback both read it
        scores = self.scores(obs, confidence)
        allowed, k = obs["allowed"], state.num_transfer
        if self.bound:  # a deterministic decoding rule over the calibrated ranking, never a recorded action
            if record:
                raise ValueError("bound=EPS is a decoding rule; training records the policy's own actions (drop it)")
            u = scores[:, : allowed.shape[1]]
            return top_k_mask(u, allowed, self.bound_count(u, allowed)), {}
        if self.mode == "sample":
            action = self.action.draw(scores, allowed, k, state.draws)
        elif self.sigma > 0:
            action = self.action.noisy_mode(scores, allowed, k, state.draws, self.sigma)
        else:
            action = self.action.draw(scores, allowed, k, None)
        reveal = order_to_mask(action, state.candidates.shape[1])
        empty = ~reveal.any(1)
        if empty.any():  # Jazbec's fallback: the most confident candidate
            fallback = top_k_mask(confidence, state.candidates, torch.ones_like(state.num_transfer))
            reveal = reveal | (fallback & empty[:, None])
        data = (
            {**obs, "action": action, "old_log_prob": self.action.log_prob(scores, allowed, action)} if record else {}
        )
        return reveal, data

    def select(self, state: StepState) -> torch.Tensor:
        return self.act(state)[0]

    def bound_count(self, u: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """k (n,) of the decoding option ``bound`` = epsilon: the longest prefix of the ranking by the utilities
        u (n, L) whose calibrated probability that every token is gold stays >= 1 - epsilon, the positions taken
        as independent:

            k = max { k >= 1 : sum_{r <= k} log sigmoid(e^a u_(r) + b) >= log(1 - epsilon) }

        with (a, b) the imitation's calibration (``config.calibration``, :func:`unmask.training.imitation.
        imitation_loss`), u_(r) the r-th largest allowed utility; at least the top position."""
        a, b = self.config.calibration
        log_p = F.logsigmoid(math.exp(a) * u + b).masked_fill(~allowed, float("-inf"))
        prefix = log_p.sort(1, descending=True).values.cumsum(1)
        return (prefix >= math.log1p(-self.bound)).sum(1).clamp(min=1)

    # ----- checkpoints -----
    def checkpoint_config(self, extra: dict | None = None) -> dict:
        """``config.json``: the policy's kind and config, then ``extra`` (default: what the loaded checkpoint held)."""
        return {"policy": {"kind": self.kind, **asdict(self.config)}, **(self.record if extra is None else extra)}

    def save(self, directory: str | Path, extra: dict | None = None, training: TrainingState | None = None) -> None:
        """Write the policy checkpoint ``directory`` atomically; ``training``: a resumable one (the trainer's ``last``)."""
        save_checkpoint(directory, self, self.checkpoint_config(extra or {}), training)


def _number(key: str, value: str | float, valid: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} takes {valid}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} takes {valid}, got {value!r}")
    return number


def current_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights named as :class:`LearnedPolicy` names them. Checkpoints written before the policies were one
    mechanism (unmask 0.1) kept the scorer's layers at the top level (UPO: ``inp.``, ``tf.``, ``mlp.``) or
    under ``net.`` (f_phi) and a learned STOP head as ``stop_head.``."""

    def rename(key: str) -> str:
        if key.startswith(("scorer.", "action.", "coupling.", "planner.")):
            return key
        if key.startswith("stop_head."):
            return "action." + key
        return "scorer." + key.removeprefix("net.")

    return {rename(k): v for k, v in tensors.items()}


def load_policy(directory: str | Path) -> LearnedPolicy:
    """Load a learned policy checkpoint (``model.safetensors`` + ``config.json``)."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"no policy checkpoint at {directory} (expected {CONFIG} and {WEIGHTS})")
    if (directory / MANIFEST).is_file():  # every save writes one: the bytes are the ones saved
        try:
            verify_checkpoint(directory)
        except ValueError as e:
            raise ValueError(f"policy checkpoint {e}; copy it again from its source (or re-train it)") from None
    meta = load_json(directory / CONFIG)
    if not isinstance(meta, dict) or "policy" not in meta:
        raise ValueError(f"{directory / CONFIG} has no 'policy' section: this is not a policy checkpoint (an MDM?)")
    if not isinstance(meta["policy"], dict):
        raise ValueError(
            f"{directory / CONFIG}: the 'policy' section must be a mapping of settings (as a save writes "
            f"it), got {type(meta['policy']).__name__}; the file was edited or is not a policy checkpoint"
        )
    spec = dict(meta["policy"])
    kind = spec.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"{directory}: unknown policy kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if kind == "upo" and "feature_size" not in spec:  # the weights' shapes follow it: without it they cannot load
        raise ValueError(
            f"{directory / CONFIG}: the 'policy' section has no feature_size (the MDM feature size the "
            "weights were built for, written by every save); the file was edited: restore it from the save"
        )
    policy = LearnedPolicy(CONFIG_TYPES[kind].from_dict(spec, source=str(directory / CONFIG)))
    load_state_into(policy, current_names(load_tensors(directory / WEIGHTS)), directory)
    run = directory.resolve()
    policy.name = f"{kind}:{run.parent.name}/{run.name}" if run.name in ("best", "last") else f"{kind}:{run.name}"
    policy.record = {k: v for k, v in meta.items() if k != "policy"}
    return policy.eval()
