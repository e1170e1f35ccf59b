"""Native SDAR (block diffusion on Qwen3 layers) against SDAR's own modeling code and block_diffusion_generate()
(tests/reference_models.py: ../shared/reference/sdar or $UNMASK_REFERENCE/sdar; tests that need them skip without)."""

import pytest
import torch

pytest.importorskip("transformers")

import tiny_hf  # noqa: E402
from reference_models import (
    EOS,
    MASK,
    assert_same_outputs,
    block_mask,
    count_forwards,
    import_sdar,
    native_twin,
    reference_sdar,
    save_official,
    tiny_sdar_config,
)  # noqa: E402

from unmask.engine.config import SamplingConfig  # noqa: E402
from unmask.engine.loop import generate  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.models.sdar import sdar_config  # noqa: E402
from unmask.models.tiny import save_tiny  # noqa: E402
from unmask.policies import get_policy  # noqa: E402

B = 4  # SDAR's default block


def test_logits_and_hidden_states_equal_the_reference():
    raw = tiny_sdar_config()
    ref = reference_sdar(raw)
    x = torch.randint(8, 32, (2, 22), generator=torch.Generator().manual_seed(0))
    x[:, 10::3] = MASK
    got = assert_same_outputs(ref, native_twin(ref, raw), x, block_mask(22, B).expand(2, 1, 22, 22))
    with torch.no_grad():
        bidirectional = ref(input_ids=x, attention_mask=torch.ones(2, 1, 22, 22)).logits
    assert not torch.allclose(got.logits, bidirectional)  # the block mask matters


@pytest.mark.parametrize("cache", ["none", "block"])
@pytest.mark.parametrize("top_k", [1, 0])
def test_decoding_equals_block_diffusion_generate(tmp_path, cache, top_k):
    """The same tokens as block_diffusion_generate(low_confidence_dynamic) in SDAR's two settings: top_k=1 (its
    deterministic one: every draw the argmax, every confidence 1; its greedy temperature 0 divides by zero) and
    sampling at temperature 1 on a batch-1 row with torch's global generator seeded alike (the same draws). Its
    forwards: one per decoded block to store the block's keys/values and one prefill of the prompt's whole blocks
    on top of unmask's (the block cache folds both into the next step's window)."""
    raw = tiny_sdar_config()
    ref = reference_sdar(raw)
    path = save_official(ref, raw, tmp_path, shards=1, tokenizer=tiny_hf.full_vocab(raw["vocab_size"]))
    model = load_model(f"hf:{path}", device="cpu")
    count_forwards(ref)
    sampler = import_sdar().block_diffusion_generate
    for prompt_length, gen_length, seed in [(5, 23, 0), (8, 24, 1), (3, 30, 2)]:
        prompt = torch.randint(8, 32, (1, prompt_length), generator=torch.Generator().manual_seed(seed))
        ref.calls = 0
        torch.manual_seed(seed)
        want = sampler(
            ref, {"input_ids": prompt}, MASK, gen_length=gen_length, block_length=B, denoising_steps=4,
            temperature=1.0, top_k=top_k, top_p=1.0, remasking_strategy="low_confidence_dynamic",
            confidence_threshold=0.85, stopping_criteria_idx=[EOS],
        )  # fmt: skip
        x = torch.full_like(want, MASK)
        x[:, :prompt_length] = prompt
        config = SamplingConfig(steps=4, cache=cache, temperature=1.0, top_k=top_k or None, suppress_mask_token=False)
        torch.manual_seed(seed)
        out = generate(model, x, get_policy("scheduled_threshold:0.85"), config, gen_start=prompt_length)
        assert torch.equal(out.sequences, torch.where(want == MASK, EOS, want))  # unmask fills after the stop with EOS
        decoded = (want[0, prompt_length:] != MASK).nonzero().squeeze(1) + prompt_length
        blocks = len((decoded // B).unique())  # the blocks SDAR decoded (after its stop it leaves masks)
        assert ref.calls == int(out.nfe[0]) + blocks + (prompt_length >= B)


def test_the_block_comes_from_the_config_or_the_load_option(tmp_path):
    path = save_tiny(tmp_path / "sdar", "sdar")
    tiny_hf.full_vocab(tiny_sdar_config()["vocab_size"]).save_pretrained(path)
    assert load_model(f"hf:{path}", device="cpu").block_length == 4
    model = load_model(f"hf:{path}", device="cpu", block_length=8)
    assert model.block_length == 8 and model.model.config.block_length == 8
    x = torch.cat([torch.full((1, 5), 9), torch.full((1, 11), MASK)], 1)
    with pytest.raises(ValueError, match="drop --block-length"):
        generate(model, x, get_policy("confidence"), SamplingConfig(block_length=4), gen_start=5)
    assert sdar_config(tiny_sdar_config(block_size=None)).block_length == 4  # SDAR's default models
    with pytest.raises(ValueError, match="use_sliding_window"):
        sdar_config(tiny_sdar_config(use_sliding_window=True))


def test_block_length_is_refused_where_the_backend_fixes_it(tmp_path):
    path = save_tiny(tmp_path / "llada2", "llada2")
    with pytest.raises(ValueError, match="uses its fixed block"):
        load_model(f"hf:{path}", device="cpu", block_length=8)
