"""The SGLang dLLM algorithm that runs an unmask policy: ``--dllm-algorithm UnmaskPolicy --dllm-algorithm-config
FILE.yaml`` (the keys of :class:`unmask.integrations.sglang.hook.ServedPolicyConfig`), after ``unmask sglang
install``. Importing this module imports SGLang and checks its interface (:func:`~unmask.integrations.sglang.shim.
check_class`); SGLang's own loop (``DllmAlgorithm.run``, synchronous or first-done-first-out) drives :meth:`step`.
"""

from __future__ import annotations

import torch
from sglang.srt.dllm.algorithm.base import DllmAlgorithm
from sglang.srt.dllm.config import DllmConfig
from sglang.srt.model_executor.forward_batch_info import ForwardBatch

from unmask.integrations.sglang.hook import BlockPolicy, RequestBlock, ServedPolicyConfig
from unmask.integrations.sglang.shim import check_class

check_class(DllmAlgorithm)

SGLANG_KEYS = ("block_size", "capture_input_preparation")  # config keys SGLang reads itself


class UnmaskPolicy(DllmAlgorithm):
    """One denoise step of each request's block under an unmask policy (:class:`BlockPolicy`)."""

    def __init__(self, config: DllmConfig) -> None:
        super().__init__(config)
        settings = {k: v for k, v in config.algorithm_config.items() if k not in SGLANG_KEYS}
        self.decoder = BlockPolicy(
            ServedPolicyConfig.from_dict(settings, source="--dllm-algorithm-config"), self.block_size, self.mask_id
        )

    def max_steps(self, block_size: int) -> int:
        return self.decoder.max_steps()

    def init_step_state(self, forward_batch: ForwardBatch) -> list[RequestBlock]:
        block = forward_batch.input_ids.view(forward_batch.batch_size, self.block_size)
        return self.decoder.start(block, forward_batch.dllm_prompt_mask)

    def step(self, forward_batch: ForwardBatch, full_logits: torch.Tensor, states: list[RequestBlock]) -> list[bool]:
        batch = forward_batch.batch_size
        block = forward_batch.input_ids.view(batch, self.block_size)  # written in place, as SGLang's own algorithms
        return self.decoder.step(block, full_logits.view(batch, self.block_size, -1), states)
