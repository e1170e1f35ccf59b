"""What a policy sees at one engine step: :class:`StepState`, the input type of the policy interface.

The engine builds one per step for the active rows and the generation region only. Tokens are drawn for
every masked position before the policy chooses (LLaDA's ``generate()``, Dream's ``maskgit_plus`` /
``topk_margin`` / ``entropy``), except for policies with ``tokens_after_reveal`` (Dream's ``origin``), which
get tokens drawn only at the positions they reveal, after their own draws, as Dream does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from unmask.engine.streams import Draws

TokenChoice = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class StepState:
    """One step for b active rows over Lg generation positions.

    ``probs`` (b, Lg, V) is p_theta(x_0 | x_n) per position (UPO Eq. 2) as the token rule scores it (LLaDA:
    ``softmax(logits)``; Dream: tempered, top-p / top-k filtered); ``tokens`` (b, Lg) the token each masked
    position would receive and ``confidence`` (b, Lg) its probability under ``probs`` (LLaDA
    ``low_confidence``, Dream ``maskgit_plus``). ``candidates`` are the masked positions the policy may reveal
    now (current block and earlier), ``num_transfer`` (b,) what the count schedule reveals now and
    ``transfer_probability`` (b,) the share of masked positions it reveals (Dream ``1 - s / t``). Random
    numbers come from ``draws`` (:mod:`unmask.engine.streams`). ``inputs`` holds per-row policy inputs (b,) the
    caller gave :func:`unmask.engine.loop.generate` (e.g. the speed weight ``alpha`` of alpha-conditioned policies).
    ``memory`` keeps what a policy carries from one step of a row to its next (:meth:`recall` / :meth:`remember`).
    On a renoised canvas (:mod:`unmask.engine.canvas`) the region is the current canvas and every position of it
    is a candidate each step: what the policy "reveals" is what the canvas keeps, the rest is renoised.
    """

    def __init__(
        self,
        probs: torch.Tensor,
        candidates: torch.Tensor,
        masked: torch.Tensor,
        num_transfer: torch.Tensor,
        total: torch.Tensor,
        draws: Draws | None = None,
        tokens: torch.Tensor | None = None,
        confidence: torch.Tensor | None = None,
        choose: TokenChoice | None = None,
        transfer_probability: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        current: torch.Tensor | None = None,
        offset: int = 0,
        inputs: dict[str, torch.Tensor] | None = None,
        memory: RowMemory | None = None,
        entropy: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> None:
        if (tokens is None or confidence is None) and choose is None:
            raise ValueError("StepState needs tokens and confidence, or a token choice to draw them")
        self.probs, self.candidates, self.masked = probs, candidates, masked
        self.num_transfer, self.total = num_transfer, total
        self._draws, self._choose = draws, choose
        self._tokens, self._confidence = tokens, confidence
        self.transfer_probability = transfer_probability
        self.hidden, self.rows, self.current = hidden, rows, current
        self.offset = offset  # positions before the region (the prompt): upstream's topk layout, see top_k_mask
        self.inputs = inputs or {}
        self.memory = memory if memory is not None else RowMemory(candidates.shape[0])
        self._entropy = entropy
        self._time = time

    @property
    def entropy(self) -> torch.Tensor:
        """(b, Lg) predictive entropy of each position: the token rule's own where it defines one (DiffusionGemma:
        ``Categorical(logits=tempered).entropy()``), else ``-sum p log(p + 1e-10)`` of ``probs`` (at least 0)."""
        if self._entropy is None:
            self._entropy = (-(self.probs * torch.log(self.probs + 1e-10)).sum(-1)).clamp(min=0)
        return self._entropy

    @property
    def row_ids(self) -> torch.Tensor:
        """(b,) each row's index in the generate() batch (``rows``; 0..b-1 for a state built without them)."""
        return (
            self.rows
            if self.rows is not None
            else torch.arange(self.candidates.shape[0], device=self.candidates.device)
        )

    def recall(self, name: str) -> torch.Tensor | None:
        """What the policy stored under ``name`` at these rows' previous step (None before the first store)."""
        kept = self.memory.values.get(name)
        return None if kept is None else kept[self.row_ids]

    def remember(self, name: str, value: torch.Tensor) -> None:
        """Store ``value`` (b, ...) for these rows' next step; rows absent from this step keep theirs."""
        kept = self.memory.values.get(name)
        if kept is None or kept.shape[1:] != value.shape[1:] or kept.dtype != value.dtype:
            kept = value.new_zeros((self.memory.batch_size, *value.shape[1:]))
            self.memory.values[name] = kept
        kept[self.row_ids] = value

    @property
    def draws(self) -> Draws:
        if self._draws is None:
            raise ValueError("this policy draws random numbers: give the StepState draws (unmask.engine.streams)")
        return self._draws

    def choose_tokens(self) -> None:
        """Draw the tokens of every masked position now (once)."""
        if self._tokens is None:
            tokens, confidence = self._choose(self.masked)
            self._tokens = torch.zeros(self.masked.shape, dtype=torch.long, device=self.masked.device).masked_scatter(
                self.masked, tokens
            )
            self._confidence = torch.zeros(
                self.masked.shape, dtype=confidence.dtype, device=self.masked.device
            ).masked_scatter(self.masked, confidence)

    @property
    def tokens(self) -> torch.Tensor:
        """(b, Lg) the token each masked position would receive (0 elsewhere)."""
        self.choose_tokens()
        return self._tokens

    @property
    def confidence(self) -> torch.Tensor:
        """(b, Lg) probability of ``tokens`` under ``probs`` (0 where not masked)."""
        self.choose_tokens()
        return self._confidence

    def chosen(self, reveal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and confidences at the ``reveal`` positions, (n,) each in row-major order: the ones already
        chosen, or (when the policy never read them) drawn now at those positions only."""
        if self._tokens is None:
            return self._choose(reveal)
        return self._tokens[reveal], self._confidence[reveal]

    @property
    def token_probs(self) -> torch.Tensor:
        """(b, Lg, V): ``probs`` at masked positions, the one-hot of the written token elsewhere (needs ``current``)."""
        if self.current is None:
            raise ValueError("this policy needs the written tokens (StepState.current)")
        written = torch.nn.functional.one_hot(self.current, self.probs.shape[-1]).to(self.probs.dtype)
        return torch.where(self.masked[..., None], self.probs, written)

    @property
    def masked_fraction(self) -> torch.Tensor:
        """Diffusion time t in (0, 1]: the share of the row's generated positions still masked; where every position
        stays a candidate (a renoised canvas, :mod:`unmask.engine.canvas`) the share of the canvas's steps left
        (``time``), which the mask share (always 1 there) cannot tell."""
        if self._time is not None:
            return self._time
        return self.masked.sum(1) / self.total.clamp(min=1)


class RowMemory:
    """Per-row tensors a policy carries across the steps of one :func:`unmask.engine.loop.generate` call (KLASS's
    previous distributions, say). The engine makes one per call, so a new batch starts empty, and each
    :class:`StepState` reads and writes it at its own rows (``StepState.rows``), so a row that finished and left
    the batch never shifts another's. Policy objects stay stateless: one object can decode many batches."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.values: dict[str, torch.Tensor] = {}
