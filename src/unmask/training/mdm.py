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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from unmask.core.checkpoint import (
    LAST,
    TrainingState,
    check_new_run,
    check_resume_settings,
    load_training_checkpoint,
    resumable_checkpoint,
    save_checkpoint,
)
from unmask.core.config import Config, option
from unmask.core.tracking import MetricsLogger, progress_bar
from unmask.models.transformer import MaskedTransformer, TransformerConfig
from unmask.tasks import get_task


@dataclass
class MDMTrainConfig(Config):
    """Hyper-parameters of ``unmask train-mdm`` (transformers' ``TrainingArguments`` names where they exist)."""

    task: str = option(
        "sudoku9",
        "task whose token layout and data stream the MDM learns",
        choices=("arithmetic", "sudoku4", "sudoku9", "zebra"),
    )  # the tasks with a built-in layout
    output_dir: str = option("runs/mdm", "run directory: the checkpoint and metrics.csv")
    n_layer: int = option(4, "transformer layers", low=1)
    n_head: int = option(4, "attention heads (must divide --n-embd)", low=1)
    n_embd: int = option(128, "embedding width", low=1)
    max_steps: int = option(3000, "optimizer steps", low=0)
    batch_size: int = option(128, "sequences per step", low=1)
    learning_rate: float = option(1e-3, "peak AdamW learning rate (after warm-up)", low=0.0, low_open=True)
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay", low=0.0)
    warmup_steps: int = option(100, "steps of linear learning-rate warm-up", low=0)
    weight_decay: float = option(0.01, "AdamW weight decay", low=0.0)
    max_grad_norm: float = option(1.0, "gradient clipping norm", low=0.0, low_open=True)
    seed: int = option(0, "random seed of the initialisation, the data and the masks", low=0)
    save_steps: int = option(250, "checkpoint every N steps (and at the end)", low=1)
    logging_steps: int = option(25, "write a metrics row every N steps (and at the end)", low=1)
    report_to: str = option(
        "none", "experiment trackers besides metrics.csv (TRL report_to): tensorboard, wandb, none or a comma list"
    )
    task_options: dict = option(
        {},
        "options forwarded to unmask.tasks.get_task (--task-option KEY=VALUE, e.g. arithmetic op=mul; docs/tasks.md)",
    )

    def check(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd (--n-embd) {self.n_embd} must be divisible by n_head (--n-head) {self.n_head}")
        if self.min_lr > self.learning_rate:
            raise ValueError(
                f"min_lr (--min-lr) {self.min_lr:g} must not exceed learning_rate (--learning-rate) {self.learning_rate:g}"
            )


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
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.learning_rate - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_mdm(cfg: MDMTrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume) a built-in MDM; returns the checkpoint directory ``<output_dir>/last`` (also loadable
    as ``<output_dir>``). A fresh run saves step 0 first, so every kill leaves a checkpoint to resume from."""
    out = Path(cfg.output_dir)
    task = get_task(cfg.task, **cfg.task_options)
    vocab_size, mask_id = task.vocab()
    mcfg = TransformerConfig(
        vocab_size=vocab_size,
        mask_id=mask_id,
        coordinates=task.coordinates(),
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        task=task.name,
    )
    torch.manual_seed(cfg.seed)
    model = MaskedTransformer(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume:
        last = resumable_checkpoint(out)
        check_resume_settings(last, asdict(cfg), schedule_uses_max_steps=True)
        rng, state = load_training_checkpoint(last, model, opt)
        gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        step = state["step"]
    else:
        check_new_run(out)
    meta = {"name": out.name, "model": mcfg.to_dict(), "train": asdict(cfg), "parameters": model.num_parameters()}
    logger = MetricsLogger(out, resume_step=step if resume else None, report_to=cfg.report_to, config=asdict(cfg))

    def save(step: int) -> None:
        rng = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
        save_checkpoint(out / LAST, model, {**meta, "step": step}, TrainingState(opt, rng, {"step": step}))

    if not resume:
        save(0)
    model.train()
    with progress_bar(
        total=cfg.max_steps, initial=step, desc=f"train-mdm {task.name}", disable=not progress
    ) as bar:  # closed before an interruption's message is printed
        t0 = time.time()
        while step < cfg.max_steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            targets, learnable = task.sample_targets(cfg.batch_size, gen)
            loss, acc = masked_diffusion_loss(model, targets, learnable, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            step += 1
            bar.update(1)
            if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                row = {
                    "step": step,
                    "loss": loss.item(),
                    "masked_acc": acc.item(),
                    "lr": lr_at(step - 1, cfg),
                    "seconds": time.time() - t0,
                }
                logger.log(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['masked_acc']:.3f}")
            if step % cfg.save_steps == 0 or step == cfg.max_steps:
                save(step)
    logger.close()
    return out / LAST
