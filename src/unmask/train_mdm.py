"""Training the built-in MDMs with the masked-diffusion objective.

Each step draws clean sequences from the task's stream, a masking ratio
``t ~ U(0, 1]`` per sequence, masks each learnable position with probability
``t`` and minimises the cross-entropy of the masked positions (the MDM loss of
UPO Eq. 3 / LLaDA, with the per-token mean instead of the 1/t weight, which is
the same minimiser and trains more smoothly at small scale).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unmask.checkpoint import (
    CONFIG,
    load_json,
    load_state_into,
    load_tensors,
    save_checkpoint,
    save_training_state,
    load_training_state,
    WEIGHTS,
)
from unmask.logging import MetricsLogger
from unmask.models.transformer import MaskedTransformer, TransformerConfig
from unmask.tasks import get_task


@dataclass
class MDMTrainConfig:
    """Hyper-parameters of ``unmask train-mdm``."""

    task: str = "sudoku9"
    output_dir: str = "runs/mdm"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    task_options: dict = field(default_factory=dict)  # forwarded to get_task (e.g. arithmetic op=mul)


def masked_diffusion_loss(
    model: MaskedTransformer, targets: torch.Tensor, learnable: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward process q(x_t | x_0) with t ~ U(0,1], then CE on masked positions. Returns (loss, accuracy)."""
    B, L = targets.shape
    t = 1.0 - torch.rand(B, 1, generator=generator)
    masked = (torch.rand(B, L, generator=generator) < t) & learnable
    # every row trains on at least one position
    empty = ~masked.any(1)
    if empty.any():
        pick = torch.multinomial(learnable[empty].float(), 1, generator=generator)
        masked[empty] = masked[empty].scatter(1, pick, True)
    inputs = torch.where(masked, torch.full_like(targets, model.mask_id), targets)
    logits = model(inputs).logits
    loss = F.cross_entropy(logits[masked], targets[masked])
    acc = (logits[masked].argmax(-1) == targets[masked]).float().mean()
    return loss, acc


def lr_at(step: int, cfg: MDMTrainConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_mdm(cfg: MDMTrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume) a built-in MDM; returns the checkpoint directory."""
    out = Path(cfg.output_dir)
    task = get_task(cfg.task, **cfg.task_options)
    vocab_size, mask_id = task.vocab()
    mcfg = TransformerConfig(
        vocab_size=vocab_size, mask_id=mask_id, coordinates=task.coordinates(),
        n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, task=task.name,
    )
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
    torch.manual_seed(cfg.seed)
    model = MaskedTransformer(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume:
        if not (out / CONFIG).is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in {out}; start without --resume")
        saved = load_json(out / CONFIG)
        if saved["train"] != asdict(cfg):
            diff = {k: (saved["train"].get(k), v) for k, v in asdict(cfg).items() if saved["train"].get(k) != v}
            raise ValueError(f"--resume: settings differ from the checkpoint's (saved, given): {diff}")
        load_state_into(model, load_tensors(out / WEIGHTS), out)
        rng, state = load_training_state(out, opt)
        gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        step = state["step"]
    meta = {"name": out.name, "model": mcfg.to_dict(), "train": asdict(cfg), "parameters": model.num_parameters()}
    logger = MetricsLogger(out, resume_step=step if resume else None)

    def save(step: int) -> None:
        save_checkpoint(out, model, {**meta, "step": step})
        save_training_state(out, opt, {"generator": gen.get_state(), "torch": torch.get_rng_state()}, {"step": step})

    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train-mdm {task.name}", disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        targets, learnable = task.sample_targets(cfg.batch_size, gen)
        loss, acc = masked_diffusion_loss(model, targets, learnable, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "loss": loss.item(), "masked_acc": acc.item(), "lr": lr_at(step - 1, cfg), "seconds": time.time() - t0}
            logger.log(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['masked_acc']:.3f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step)
    bar.close()
    logger.close()
    return out
