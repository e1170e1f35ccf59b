"""The typed configs of the learned policies, one per kind (saved as the ``policy`` section of ``config.json``).

* ``upo``: :class:`UPOConfig`, UPO's g_phi (UPO §3.3, App. B.1) with a Plackett-Luce action over the schedule's
  count (one position per step in the paper).
* ``bernoulli``: :class:`ParallelConfig`, Jazbec's confidence-only f_phi (§3.2) with Bernoulli reveal decisions.
* ``plackett-luce``: :class:`PlackettLuceConfig`, f_phi with a Plackett-Luce action, until STOP or the
  schedule's count.

Each may add a learned coupling (``coupling_rounds``, :mod:`unmask.policies.coupling`) and a planner
(``planner``, :mod:`unmask.policies.planner`): :class:`StructureConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unmask.core.config import Config, option

DEFAULT_ALPHA = 1.0  # the speed weight alpha of GRPOConfig.alpha's default, and of an untrained policy's input


@dataclass
class StructureConfig(Config):
    """What a learned policy reads across positions, beyond its scorer (both kinds): a learned coupling of the
    marginals (:mod:`unmask.policies.coupling`) and a planner (:mod:`unmask.policies.planner`).

    Each kind also declares how it trains (class attributes the trainers read, never the kind's name):
    ``regularised`` (a reference regulariser, UPO Table 1, is its default and the reference's settings shape it),
    ``speed_aware`` (its default reward is Jazbec's speed-aware one, and the speed weight alpha is an input) and
    :attr:`variable_count` (it may reveal any number of positions per step: expert trajectories, Jazbec §3.4,
    can be scored under it)."""

    regularised: ClassVar[bool] = False
    speed_aware: ClassVar[bool] = False
    COMMON: ClassVar[tuple[str, ...]] = ()  # the fields --help shows (the rest: --help-all)

    @property
    def variable_count(self) -> bool:
        return False

    coupling_rounds: int = option(
        0,
        "> 0: the scorer reads confidences refined by a learned pairwise coupling "
        "(unmask.policies.coupling), this many mean-field rounds",
        low=0,
    )
    coupling_length: int = option(
        0, "positions of the generation region the coupling is learned over", low=0, derived=True
    )
    planner: bool = option(
        False,
        "add a planner's residual to the scorer's logits (unmask.policies.planner): "
        "per-position features and learned pairwise channels over the whole answer, "
        "trained by imitation of the oracle (--imitation-rounds)",
    )
    pair_channels: int = option(
        4, "the planner's learned pairwise channels W^c (L x L each; --planner-pairs learned)", low=0
    )
    planner_pairs: str = option(
        "learned",
        "the planner's pairwise inputs: learned = --pair-channels matrices W^c trained with it; cliques = "
        "per-clique sums over the maximal cliques of the (trained, frozen) coupling's graph {A_ij > "
        "--clique-threshold} (needs a coupling and --init-policy: the coupling it reads)",
        choices=("learned", "cliques"),
    )
    clique_threshold: float = option(
        0.3, "--planner-pairs cliques: the coupling graph's edges are the pairs with strength A_ij > this", low=0.0
    )
    clique_min_size: int = option(5, "--planner-pairs cliques: the smallest clique kept (positions)", low=2)
    planner_cliques: int = option(0, "cliques the planner reads (--planner-pairs cliques)", low=0, derived=True)
    planner_slots: int = option(
        0, "cliques per position the planner reads (the most holding one position)", low=0, derived=True
    )
    planner_layers: int = option(
        0, "bidirectional transformer layers of the planner over the positions (0: an MLP per position)", low=0
    )
    planner_d_model: int = option(64, "width of the planner", low=1)
    planner_heads: int = option(4, "attention heads of the planner's layers (must divide --planner-d-model)", low=1)
    planner_length: int = option(
        0, "positions of the generation region the planner is learned over", low=0, derived=True
    )
    calibration: list[float] = option(
        [],
        "imitation's calibration (a, b) of the utilities: sigmoid(e^a u_i + b) is the probability that position "
        "i's token is gold (unmask.training.imitation); what the decoding option bound=EPS reads; empty: none",
        derived=True,
    )

    def check(self) -> None:
        if self.planner and self.planner_pairs == "cliques" and not self.coupling_rounds:
            raise ValueError(
                "planner_pairs (--planner-pairs) cliques reads the cliques of the policy's learned coupling; "
                "give the policy a coupling (--coupling-rounds N) or use --planner-pairs learned"
            )
        if self.planner_d_model % self.planner_heads:
            raise ValueError(
                f"planner_d_model (--planner-d-model) {self.planner_d_model} must be divisible by "
                f"planner_heads (--planner-heads) {self.planner_heads}"
            )


@dataclass
class UPOConfig(StructureConfig):
    """Architecture of g_phi plus the identity of the MDM it reads."""

    regularised: ClassVar[bool] = True
    COMMON: ClassVar[tuple[str, ...]] = ("d_model", "coupling_rounds")

    feature_size: int = option(0, "D of the MDM's hidden features", low=0, derived=True)
    d_model: int = option(32, "width of phi_TF, the transformer layer over the MDM features (UPO App. B.1)", low=1)
    n_head: int = option(4, "attention heads of phi_TF (must divide --d-model)", low=1)
    prob_features: int = option(5, "K of TopK(p), the probability features of Eq. 21", low=1)
    mlp_hidden: int = option(64, "hidden width of phi_MLP", low=1)
    base_temperature: float | None = option(
        0.05,
        "tau0 of the log-confidence base score (start as the softmax-confidence reference); none = no base term",
        low=0.0,
        low_open=True,
    )
    top_k: int | None = option(
        None,
        "restrict to the K most confident candidates (Top-K realisation, Eq. 27; set by --reference topk)",
        low=1,
        derived=True,
    )
    mdm_name: str = option("", "the MDM it was trained with", derived=True)
    mdm_vocab_size: int = option(0, "vocabulary size of that MDM", low=0, derived=True)
    mdm_mask_id: int = option(0, "mask token id of that MDM", low=0, derived=True)

    def check(self) -> None:
        super().check()
        if self.d_model % self.n_head:
            raise ValueError(f"d_model (--d-model) {self.d_model} must be divisible by n_head (--n-head) {self.n_head}")
        if self.coupling_rounds and self.base_temperature is None:
            raise ValueError(
                "a coupling (--coupling-rounds) refines the base score log(confidence) / tau0; it needs a "
                "base temperature (--base-temperature)"
            )


@dataclass
class ParallelConfig(StructureConfig):
    """Architecture and inference defaults of a parallel policy (saved as ``config.json``)."""

    speed_aware: ClassVar[bool] = True
    COMMON: ClassVar[tuple[str, ...]] = ("d_model", "coupling_rounds", "alpha_range")

    @property
    def variable_count(self) -> bool:
        return True  # one Bernoulli decision per position

    d_model: int = option(32, "width of the policy network", low=1)
    n_head: int = option(2, "attention heads of the policy network (must divide --d-model)", low=1)
    base_threshold: float | None = option(
        0.9,
        "warm start: a soft threshold rule at this confidence (Fast-dLLM); none = plain init",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    base_threshold_hi: float | None = option(
        None,
        "alpha-conditioned policies: the warm start's threshold at "
        "alpha = HI (logit-linear in alpha from --base-threshold at LO)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    temperature: float = option(
        1.0,
        "tau_pi of the policy (a spec's :temperature= overrides it at inference)",
        low=0.0,
        low_open=True,
        flag="--policy-temperature",
    )
    alpha: float | None = option(
        None,
        "the trainer's alpha (GRPOConfig.alpha, the one setting), set when the trainer "
        "builds the policy: for alpha-conditioned policies the default input",
        low=0.0,
        derived=True,
    )
    alpha_range: list[float] | None = option(
        None,
        "alpha-conditioned policy: alpha ~ U[LO, HI] per group in training and a policy input (Jazbec §3.3)",
        low=0.0,
        length=2,
    )
    mdm_name: str = option("", "the MDM it was trained with (for the record: confidences fit any MDM)", derived=True)

    def check(self) -> None:
        super().check()
        if self.d_model % self.n_head:
            raise ValueError(f"d_model (--d-model) {self.d_model} must be divisible by n_head (--n-head) {self.n_head}")
        if self.base_threshold_hi is not None and (self.alpha_range is None or self.base_threshold is None):
            raise ValueError(
                "base_threshold_hi (the warm start's threshold at alpha = HI) needs an alpha range "
                "and a base_threshold (the one at alpha = LO)"
            )
        if (
            self.alpha is not None
            and self.alpha_range is not None
            and not self.alpha_range[0] <= self.alpha <= self.alpha_range[1]
        ):
            raise ValueError(f"alpha {self.alpha:g} lies outside the alpha range {self.alpha_range}")


@dataclass
class PlackettLuceConfig(ParallelConfig):
    """A parallel policy with a Plackett-Luce action: until a STOP item (Jazbec's dynamic Plackett-Luce) or the
    schedule's count."""

    COMMON: ClassVar[tuple[str, ...]] = ("d_model", "coupling_rounds", "alpha_range", "count")

    count: str = option(
        "stop",
        "how many positions a step reveals: stop = draw until STOP (dynamic), schedule = "
        "the engine's tokens per step (--steps)",
        choices=("stop", "schedule"),
        flag="--pl-count",
    )
    stop_logit: float | None = option(0.0, "fixed STOP utility; none = learned from the pooled state")

    @property
    def variable_count(self) -> bool:
        return self.count == "stop"


PLANNER_FIELDS = (
    "planner",
    "planner_pairs",
    "pair_channels",
    "clique_threshold",
    "clique_min_size",
    "planner_cliques",
    "planner_slots",
    "planner_layers",
    "planner_d_model",
    "planner_heads",
    "planner_length",
)
CLIQUE_FIELDS = ("planner_cliques", "planner_slots")  # derived from the coupling the planner is built over
CONFIG_TYPES: dict[str, type] = {"upo": UPOConfig, "bernoulli": ParallelConfig, "plackett-luce": PlackettLuceConfig}
