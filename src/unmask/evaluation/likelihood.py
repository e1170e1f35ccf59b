"""Conditional log-likelihood of an answer under an MDM: LLaDA's Monte-Carlo estimate.

LLaDA (Nie et al., 2025, §B.5 / Eq. 6) scores ``log p(answer | prompt)`` by the lower bound

    - E_l [ (L / l) * sum_{i masked} -log p_theta(answer_i | prompt, answer with l of its L tokens masked) ]

with ``l`` uniform in {1, ..., L}. As LLaDA's ``get_log_likelihood.py`` (the test oracle), each batch of
``batch_size`` copies draws one ``k ~ U{1..L}`` and spreads the masked counts of its rows evenly from it
(``round(linspace(k, k + (b - 1) L / b))``, wrapped into 1..L, which lowers the variance), masks a random
``l`` answer positions per row, and averages the ``1 / (l / L)``-weighted cross-entropy over
``mc_num // batch_size`` batches; ``cfg_scale`` > 0 mixes in the prompt-masked logits (unsupervised
classifier-free guidance). The random draws are the oracle's, in its order, from ``generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unmask.models.base import MaskedDiffusionModel


def forward_process(
    seq: torch.Tensor, prompt_length: int, mask_id: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``seq`` (b, P + L) for one Monte-Carlo batch: (noisy batch, masked share ``l / L`` per row (b, 1))."""
    b, total = seq.shape
    L = total - prompt_length
    k = torch.randint(1, L + 1, (), generator=generator, device=generator.device if generator else seq.device)
    counts = torch.round(torch.linspace(float(k), k.cpu() + (b - 1) * (L / b), steps=b)).long()
    counts = ((counts - 1) % L) + 1
    rank = torch.arange(L).repeat(b, 1) < counts[:, None]
    for i in range(b):
        rank[i] = rank[i][torch.randperm(L, generator=generator)]
    is_mask = torch.cat([torch.zeros(b, prompt_length, dtype=torch.bool), rank], 1).to(seq.device)
    return torch.where(is_mask, torch.full_like(seq, mask_id), seq), (counts.float() / L)[:, None].to(seq.device)


def guided_logits(
    model: MaskedDiffusionModel, batch: torch.Tensor, prompt_length: int, cfg_scale: float
) -> torch.Tensor:
    """The MDM's logits, with ``cfg_scale`` > 0: ``un + (cfg_scale + 1) (cond - un)`` where ``un`` reads the batch
    with its prompt masked (LLaDA ``get_logits``)."""
    if cfg_scale <= 0:
        return model(batch).logits
    unconditional = batch.clone()
    unconditional[:, :prompt_length] = model.mask_id
    cond, un = model(torch.cat([batch, unconditional])).logits.chunk(2)
    return un + (cfg_scale + 1) * (cond - un)


@torch.no_grad()
def monte_carlo_log_likelihood(
    model: MaskedDiffusionModel,
    prompt: torch.Tensor | list[int],
    answer: torch.Tensor | list[int],
    mc_num: int = 128,
    batch_size: int = 16,
    cfg_scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> float:
    """The Monte-Carlo estimate of ``log p(answer | prompt)`` (see the module docstring); ``mc_num`` samples in
    batches of ``batch_size`` (a multiple of it)."""
    if batch_size < 1 or mc_num < batch_size or mc_num % batch_size:
        raise ValueError(f"mc_num ({mc_num}) must be a positive multiple of the Monte-Carlo batch size ({batch_size})")
    prompt = torch.as_tensor(prompt, dtype=torch.long)
    answer = torch.as_tensor(answer, dtype=torch.long)
    if answer.numel() == 0:
        raise ValueError("the answer to score is empty: no tokens after the prompt")
    seq = torch.cat([prompt, answer])[None].repeat(batch_size, 1).to(model.device)
    losses = []
    for _ in range(mc_num // batch_size):
        noisy, share = forward_process(seq, len(prompt), model.mask_id, generator)
        masked = noisy == model.mask_id
        logits = guided_logits(model, noisy, len(prompt), cfg_scale).float()
        loss = F.cross_entropy(logits[masked], seq[masked], reduction="none") / share.expand_as(seq)[masked]
        losses.append(loss.sum().item() / batch_size)
    return -sum(losses) / len(losses)
