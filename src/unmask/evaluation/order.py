"""Unmasking order (``unmask show-order``): the step at which a policy revealed each generated position.

:func:`reveal_order` decodes examples with a policy and keeps the engine's ``order``
(the 0-based NFE at which each position of the generation region was revealed, -1
for given positions such as sudoku clues); :func:`plot_order` draws it as a heatmap
per example (tokens annotated where they fit) beside the mean normalised reveal step
per position over all examples (0 = revealed at the row's first step, 1 = at its
last). Tasks choose the 2-D shape of the drawing with ``Task.answer_shape`` (sudoku:
the grid) and the printed tokens with ``Task.token_text``. :meth:`RevealOrder.agreement`
compares two policies' orders on the same examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unmask.core.checkpoint import atomic_write
from unmask.engine.config import SamplingConfig
from unmask.engine.decode import GenerationOutput
from unmask.engine.policy import Policy
from unmask.evaluation.evaluate import run_policy
from unmask.models.base import MaskedDiffusionModel
from unmask.tasks.base import EncodedBatch, Task


@dataclass
class RevealOrder:
    """Reveal steps of ``N`` decoded examples over a generation region of ``Lg`` positions."""

    order: np.ndarray  # (N, Lg) NFE index at which each position was revealed; -1 for given positions
    tokens: list[list[str]]  # (N, Lg) text of the final token at each position
    prompts: list[str]  # text before the generation region ("" when it starts at position 0)
    nfe: np.ndarray  # (N,)
    solved: np.ndarray  # (N,)
    shape: tuple[int, int]  # how to draw the Lg positions (Task.answer_shape)
    context: dict = field(default_factory=dict)

    @property
    def normalised(self) -> np.ndarray:
        """Reveal step divided by the row's last step (0 = first, 1 = last); nan for given positions."""
        last = np.maximum(self.nfe - 1, 1)[:, None].astype(np.float64)
        return np.where(self.order >= 0, self.order / last, np.nan)

    @property
    def mean_normalised(self) -> np.ndarray:
        """(Lg,) mean normalised reveal step per position over the examples that generated it (nan if none)."""
        norm = self.normalised
        counts = np.isfinite(norm).sum(0)
        return np.where(counts > 0, np.nansum(norm, 0) / np.maximum(counts, 1), np.nan)

    def agreement(self, other: RevealOrder) -> dict[str, float]:
        """How far two policies' orders on the same examples agree: whole orders, per-position steps, the
        first step's positions, and which examples each solves."""
        if self.order.shape != other.order.shape:
            raise ValueError(f"orders of different examples: shapes {self.order.shape} and {other.order.shape}")
        generated = self.order >= 0
        return {
            "examples": len(self.order),
            "identical_order": float((self.order == other.order).all(1).mean()),
            "same_step": float((self.order == other.order)[generated].mean()),
            "same_first_step": float(((self.order == 0) == (other.order == 0)).all(1).mean()),
            "solved_by_one_only": float((self.solved != other.solved).mean()),
        }

    def to_json(self) -> dict:
        def clean(values: np.ndarray) -> list:
            return [None if not np.isfinite(v) else round(float(v), 4) for v in values]

        return {
            **self.context,
            "shape": list(self.shape),
            "mean_normalised_step": clean(self.mean_normalised),
            "examples": [
                {"prompt": p, "tokens": t, "order": o, "nfe": int(n), "solved": bool(s)}
                for p, t, o, n, s in zip(self.prompts, self.tokens, self.order.tolist(), self.nfe, self.solved)
            ],
        }


def reveal_order(
    task: Task,
    model: MaskedDiffusionModel,
    examples: Sequence,
    policy: Policy,
    sampling: SamplingConfig | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> RevealOrder:
    """Decode ``examples`` with ``policy`` and record where each step revealed (``GenerationOutput.order``)."""
    order, tokens, prompts = [], [], []

    def keep(chunk: Sequence, enc: EncodedBatch, out: GenerationOutput) -> None:
        text = task.token_text(out.sequences.cpu(), model)
        kept = [None] * len(chunk) if enc.attention_mask is None else enc.attention_mask.cpu().bool().tolist()
        for row, k in zip(text, kept):
            prompt = row[: enc.gen_start] if k is None else [t for t, m in zip(row[: enc.gen_start], k) if m]
            prompts.append("".join(prompt))
            tokens.append(row[enc.gen_start :])
        order.append(out.order.cpu().numpy())

    _, per = run_policy(task, model, examples, policy, sampling, batch_size, seed, on_batch=keep)
    order_arr = np.concatenate(order)
    return RevealOrder(
        order=order_arr,
        tokens=tokens,
        prompts=prompts,
        nfe=per["nfe"],
        solved=per["solved"],
        shape=task.answer_shape(order_arr.shape[1]),
        context={"policy": policy.name, "task": task.name, "model": model.name},
    )


def _annotate(
    ax, values: np.ndarray, labels: np.ndarray, given: np.ndarray, fontsize: float, steps: np.ndarray | None = None
) -> None:
    """Write ``labels`` (and, small below them, ``steps``) into the cells of an ``imshow``: black on given
    and light cells, white on dark ones."""
    for (r, c), text in np.ndenumerate(labels):
        colour = "black" if given[r, c] or values[r, c] >= 0.5 else "white"
        lift = 0.12 if steps is not None and not given[r, c] else 0.0
        ax.text(
            c,
            r - lift,
            text,
            ha="center",
            va="center",
            fontsize=fontsize,
            color=colour,
            fontweight="bold" if given[r, c] else "normal",
        )
        if lift:
            ax.text(c, r + 0.28, f"step {steps[r, c]}", ha="center", va="center", fontsize=0.6 * fontsize, color=colour)


def plot_order(result: RevealOrder, path: str | Path, num_examples: int = 8, normalise: bool = False) -> None:
    """Heatmaps of the reveal step of ``num_examples`` examples and of the mean normalised step over all.

    Colour: the absolute step (0 = first NFE) or, with ``normalise``, step / last step of the row.
    Given positions are grey. One-row shapes put the examples in rows (prompt and solved mark
    on the left); 2-D shapes (sudoku) draw one panel per example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if num_examples < 1 or not len(result.order):
        raise ValueError(f"plot_order needs at least one example to draw, got {num_examples} of {len(result.order)}")
    n = min(num_examples, len(result.order))
    rows, cols = result.shape
    values = (
        result.normalised[:n] if normalise else np.where(result.order[:n] >= 0, result.order[:n], np.nan).astype(float)
    )
    vmax = 1.0 if normalise else max(float(np.nanmax(values, initial=0.0)), 1.0)
    shade = result.normalised[:n]  # text colour follows the relative step
    tokens = np.array(result.tokens[:n], dtype=object)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    label = "reveal step / last step" if normalise else "reveal step (NFE index)"
    mean = result.mean_normalised.reshape(rows, cols)
    title = f"{result.context.get('task', '')} · {result.context.get('model', '')} · {result.context.get('policy', '')}"
    mean_title = f"mean reveal step / last step\nover {len(result.order)} examples"
    readable = max(len(t) for row in result.tokens[:n] for t in row) <= 4

    if rows == 1:
        width = min(max(6.0, 0.5 * cols + 3.5), 20.0)
        fig, (ax, bx) = plt.subplots(
            2, 1, figsize=(width, 1.2 + 0.45 * n + 2.0), height_ratios=[n, 3], layout="constrained"
        )
        im = ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        if readable and cols <= 40:
            _annotate(
                ax,
                shade,
                tokens,
                result.order[:n] < 0,
                10 if cols <= 24 else 7,
                result.order[:n] if cols <= 24 else None,
            )
        ax.set_yticks(
            range(n),
            [f"{p[-24:]} {'✓' if s else '✗'}" for p, s in zip(result.prompts[:n], result.solved[:n])],
            fontsize=8,
            family="monospace",
        )
        ax.set_xticks(range(cols) if cols <= 40 else [])
        ax.set_xlabel("generated position")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, label=label)
        bx.bar(range(cols), mean.ravel(), color="tab:blue")
        bx.set_xlim(-0.5, cols - 0.5)
        bx.set_ylim(0, 1)
        bx.set_xticks(range(cols) if cols <= 40 else [])
        bx.set_ylabel("mean step / last")
        bx.set_xlabel("generated position")
        bx.set_title(mean_title, fontsize=9)
        bx.grid(alpha=0.3, axis="y")
    else:
        grid_cols = min(4, n + 1)
        grid_rows = -(-(n + 1) // grid_cols)
        fig, axes = plt.subplots(
            grid_rows,
            grid_cols,
            figsize=(2.4 * grid_cols + 1.0, 2.5 * grid_rows + 0.4),
            squeeze=False,
            layout="constrained",
        )
        for i, ax in enumerate(axes.ravel()):
            ax.set_xticks([])
            ax.set_yticks([])
            if i < n:
                given = (result.order[i] < 0).reshape(rows, cols)
                im = ax.imshow(values[i].reshape(rows, cols), cmap=cmap, vmin=0, vmax=vmax)
                if readable and rows * cols <= 400:
                    _annotate(ax, shade[i].reshape(rows, cols), tokens[i].reshape(rows, cols), given, 6)
                ax.set_title(f"example {i} {'✓' if result.solved[i] else '✗'} ({int(result.nfe[i])} NFE)", fontsize=8)
            elif i == n:
                mean_im = ax.imshow(mean, cmap=cmap, vmin=0, vmax=1)
                ax.set_title(mean_title, fontsize=8)
                fig.colorbar(mean_im, ax=ax, location="bottom", shrink=0.8)
            else:
                ax.axis("off")
        fig.colorbar(im, ax=axes, label=label, shrink=0.6)
        fig.suptitle(title, fontsize=9)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)
