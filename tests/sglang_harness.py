"""SGLang's real dLLM algorithm code on a CPU: its serving-stack imports replaced, its decode loop driven over a
tiny unmask MDM as SGLang's scheduler drives it (one block of each request per ``run``).

:func:`load_algorithms` imports ``sglang.srt.dllm.algorithm`` from an installed wheel (or a copy of it) with only
the infrastructure modules its files import stubbed (:data:`INFRA`: the model runner, the forward batch, the
server arguments; none of them decides a token), so ``DllmAlgorithm.run``, ``LowConfidence``, ``JointThreshold``
(and ``EBSampling`` where the wheel has it) run as shipped. :func:`serve` plays the scheduler and the model runner.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

from unmask.models.base import MaskedDiffusionModel

INFRA: dict[str, dict] = {  # the serving stack the algorithm modules import (names only; none is called)
    "sglang.srt.layers.logits_processor": {"LogitsProcessorOutput": object},
    "sglang.srt.model_executor.forward_batch_info": {"ForwardBatch": object},
    "sglang.srt.model_executor.model_runner": {"ModelRunner": object},
    "sglang.srt.server_args": {"ServerArgs": object},
    "sglang.srt.utils": {"is_npu": lambda: False},
    "sglang.srt.arg_groups.overrides": {"resolving_view": lambda args: args},
    "sglang.srt.configs.model_config": {"ModelConfig": object},
}


def _module(name: str, path: Path | None = None, package: bool = True, **attrs) -> ModuleType:
    module = ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:  # its submodules import from path (none: only the stubs registered here)
        module.__path__ = module.__spec__.submodule_search_locations = [] if path is None else [str(path)]
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def unload() -> None:
    """Forget every SGLang module (and unmask's adapter, which subclasses one)."""
    for name in [n for n in sys.modules if n.split(".")[0] == "sglang"] + ["unmask.integrations.sglang.algorithm"]:
        sys.modules.pop(name, None)


def load_algorithms(root: Path) -> ModuleType:
    """``sglang.srt.dllm.algorithm`` imported from the package folder ``root`` (…/site-packages/sglang, or a copy)
    without running ``sglang/__init__.py`` (the serving stack) and with :data:`INFRA` stubbed."""
    unload()
    _module("sglang", root)
    _module("sglang.srt", root / "srt")
    for name, attrs in INFRA.items():
        parts = name.split(".")
        for i in range(3, len(parts)):
            if ".".join(parts[:i]) not in sys.modules:
                _module(".".join(parts[:i]))
        _module(name, package=False, **attrs)
    return importlib.import_module("sglang.srt.dllm.algorithm")


class Runner:
    """SGLang's model runner over an unmask MDM: the forward of one block of each request, seeing the canvas
    (prompt, finished blocks, the block, masks after it) as unmask's engine does without a cache; each forward's
    input block is recorded (``seen``)."""

    def __init__(self, model: MaskedDiffusionModel, canvas: torch.Tensor, block_size: int) -> None:
        self.model, self.canvas, self.block_size = model, canvas, block_size
        self.start, self.seen = 0, []

    def forward(self, forward_batch, pp_proxy_tensors=None):
        B, end = forward_batch.batch_size, self.start + self.block_size
        block = forward_batch.input_ids.view(B, self.block_size)
        self.seen[-1].append(block.clone())
        x = self.canvas.clone()
        x[:, self.start : end] = block
        logits = self.model(x).logits[:, self.start : end]
        return SimpleNamespace(
            logits_output=SimpleNamespace(full_logits=logits.reshape(-1, logits.shape[-1])), can_run_graph=False
        )


def serve(
    algorithm, model: MaskedDiffusionModel, prompt: torch.Tensor, blocks: int, block_size: int, fdfo: bool = False
):
    """Decode ``blocks`` blocks after ``prompt`` (B, P) with an SGLang algorithm instance, block by block as SGLang's
    scheduler does (``run`` once per block; with ``fdfo``, ``run`` per step, carrying the states, until every
    request's block is done). The final canvas (B, P + blocks * block_size) and each block's forward inputs."""
    B, P = prompt.shape
    canvas = torch.cat([prompt, torch.full((B, blocks * block_size), model.mask_id, dtype=torch.long)], 1)
    runner = Runner(model, canvas, block_size)
    for k in range(blocks):
        runner.start = P + k * block_size
        runner.seen.append([])
        batch = SimpleNamespace(
            batch_size=B,
            input_ids=canvas[:, runner.start : runner.start + block_size].reshape(-1).clone(),
            dllm_prompt_mask=None,
        )
        if fdfo:
            states, accepted = None, [0] * B
            while not all(a == block_size for a in accepted):
                _, _, accepted, states, _ = algorithm.run(runner, batch, states)
        else:
            algorithm.run(runner, batch)
        canvas[:, runner.start : runner.start + block_size] = batch.input_ids.view(B, block_size)
    return canvas, runner.seen


def reveal_steps(
    seen: list[list[torch.Tensor]], mask_id: int, steps_per_block: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """From each block's forward inputs: the step (per request, counted over its blocks as unmask's engine counts
    them) at which each generated position was revealed (B, blocks * block_size), and each request's steps (B,).
    A request's step is a forward after which its block still had masks or, with ``steps_per_block`` (a count
    schedule), one of the block's first ``steps_per_block`` forwards."""
    B, block_size = seen[0][0].shape
    order = torch.full((B, len(seen) * block_size), -1, dtype=torch.long)
    steps = torch.zeros(B, dtype=torch.long)
    for k, inputs in enumerate(seen):
        for j, (before, after) in enumerate(zip(inputs, inputs[1:])):
            for row in range(B):
                if (before[row] == mask_id).any() if steps_per_block is None else j < steps_per_block:
                    revealed = (before[row] == mask_id) & (after[row] != mask_id)
                    order[row, k * block_size : (k + 1) * block_size][revealed] = steps[row]
                    steps[row] += 1
    return order, steps
