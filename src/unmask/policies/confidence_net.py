"""The confidence-only policy network f_phi of Jazbec §3.2 (Fig. 2).

Per position of the generation region it reads three numbers only: the MDM's
confidence (max-probability of the token the engine would write; 0 where the
position is already revealed), the mask flag and the current-block flag. They are
projected to ``d_model``, passed through one transformer layer whose LayerNorms are
modulated by the diffusion time t (the share of the row still masked; sinusoidal
embedding + MLP, adaLN-Zero as in DiT) and, for alpha-conditioned policies, by the
speed weight alpha; attention uses rotary position embeddings (RoPE), so only
relative positions matter and the policy runs at any length. A zero-initialised
linear head gives one logit per position.

Nothing here depends on the MDM's vocabulary, mask id or hidden size, which is what
lets one policy serve several MDMs and lengths (Jazbec §4.4). With ``base_threshold``
the logit starts from ``gain * (logit(c) - logit(base_threshold))`` (learned gain,
initially 5): an untrained Bernoulli policy is then a soft Fast-dLLM threshold rule and
its greedy mode exactly ``threshold:base_threshold`` (our warm start for small CPU
budgets; ``None`` gives the paper's plain initialisation). An alpha-conditioned policy
may start as a family of such rules: with ``base_threshold_hi`` the threshold moves from
``base_threshold`` at alpha = LO to ``base_threshold_hi`` at alpha = HI, linearly in
logit space, so the untrained policy already answers alpha and GRPO refines each point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unmask.engine.state import StepState
from unmask.policies.scorers import Scorer


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def scalar_embedding(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (n, dim) of scalars x in [0, 1] (DiT's timestep embedding of 1000 x)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = 1000 * x.float()[:, None] * freqs
    return torch.cat([angles.cos(), angles.sin()], -1)


def rotate(x: torch.Tensor) -> torch.Tensor:
    """RoPE on (n, heads, L, head_dim): rotate feature pairs by angle position * frequency."""
    length, half = x.shape[-2], x.shape[-1] // 2
    freqs = 10_000 ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * freqs
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def conditioner(d_model: int) -> nn.Sequential:
    """MLP from a scalar's sinusoidal embedding to a conditioning vector."""
    return nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))


def zero_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class AdaLNBlock(nn.Module):
    """One pre-norm transformer layer with adaLN-Zero modulation and RoPE self-attention."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.modulation = zero_linear(d_model, 6 * d_model)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(cond))[:, None].chunk(6, -1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = (t.view(n, length, self.n_head, d // self.n_head).transpose(1, 2) for t in self.qkv(h).split(d, -1))
        y = F.scaled_dot_product_attention(rotate(q), rotate(k), v)
        x = x + gate1 * self.proj(y.transpose(1, 2).reshape(n, length, d))
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class ConfidenceNet(Scorer):
    """f_phi: (confidence, mask, block flag, t[, alpha]) -> a logit per position and a pooled state."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        base_threshold: float | None,
        alpha_range: list[float] | None,
        base_threshold_hi: float | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_head or (d_model // n_head) % 2:
            raise ValueError(f"d_model ({d_model}) must split into n_head ({n_head}) heads of even size (RoPE)")
        self.d_model = d_model
        self.base_threshold = base_threshold
        self.base_threshold_hi = base_threshold_hi
        self.alpha_range = alpha_range
        self.inp = nn.Linear(3, d_model)
        self.time = conditioner(d_model)
        self.alpha = conditioner(d_model) if alpha_range is not None else None
        self.block = AdaLNBlock(d_model, n_head)
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.final_modulation = zero_linear(d_model, 2 * d_model)
        self.head = zero_linear(d_model, 1)
        self.gain = nn.Parameter(torch.tensor(5.0)) if base_threshold is not None else None
        self.conditioned = alpha_range is not None

    def observe(self, state: StepState) -> dict[str, torch.Tensor]:
        """Confidence, mask and block flags, diffusion time: nothing MDM-specific."""
        conf = state.confidence.float()
        if not torch.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1 + 1e-4:
            raise ValueError(
                f"this policy reads MDM confidences (probabilities in [0, 1]); this MDM gave "
                f"values in [{conf.min().item():.3g}, {conf.max().item():.3g}]"
            )
        return {
            "confidence": conf,
            "masked": state.masked,
            "allowed": state.candidates,
            "time": state.masked_fraction.float(),
        }

    def forward(self, obs: dict[str, torch.Tensor], confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits b (n, L) and the mean final state over masked positions (n, d_model), from the
        ``confidence`` (n, L) the policy reads."""
        masked = obs["masked"].float()
        conf = confidence * masked
        x = self.inp(torch.stack([conf, masked, obs["allowed"].float()], -1))
        cond = self.time(scalar_embedding(obs["time"], self.d_model))
        if self.alpha is not None:
            lo, hi = self.alpha_range
            alpha01 = (obs["alpha"] - lo) / (hi - lo)
            cond = cond + self.alpha(scalar_embedding(alpha01, self.d_model))
        x = self.block(x, cond)
        shift, scale = self.final_modulation(F.silu(cond))[:, None].chunk(2, -1)
        h = self.norm(x) * (1 + scale) + shift
        logits = self.head(h).squeeze(-1)
        if self.gain is not None:
            offset: float | torch.Tensor = _logit(self.base_threshold)
            if self.base_threshold_hi is not None:  # one threshold per row's alpha (ParallelConfig checks the range)
                offset = offset + alpha01[:, None] * (_logit(self.base_threshold_hi) - offset)
            c = conf.clamp(1e-6, 1 - 1e-6)
            logits = logits + self.gain * (torch.logit(c) - offset)
        pooled = (h * masked[..., None]).sum(1) / masked.sum(1, keepdim=True).clamp(min=1)
        return logits, pooled
