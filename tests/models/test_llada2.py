"""Native LLaDA2.x (block diffusion) against LLaDA2's own modeling code and generate() loop, and the engine's block
sampler and exact block cache (tests/reference_models.py: the reference files come from ../shared/reference/llada2,
or $UNMASK_REFERENCE/llada2; tests that need them skip without them)."""

import pytest
import torch

pytest.importorskip("transformers")

import tiny_hf  # noqa: E402
from reference_models import (  # noqa: E402
    EOS,
    MASK,
    assert_same_outputs,
    block_mask,
    count_forwards,
    native_twin,
    reference_llada2,
    save_official,
    tiny_llada2_config,
)

from unmask.engine.config import SamplingConfig  # noqa: E402
from unmask.engine.loop import generate  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.models.llada2 import LLaDA2, llada2_config  # noqa: E402
from unmask.models.tiny import randomize_, save_tiny  # noqa: E402
from unmask.policies import get_policy  # noqa: E402

B = 32  # LLaDA2's block


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(reference LLaDA2MoeModelLM counting its forwards, unmask's native model on its saved checkpoint)."""
    raw = tiny_llada2_config()
    ref = reference_llada2(raw)
    path = save_official(
        ref, raw, tmp_path_factory.mktemp("llada2"), shards=2, tokenizer=tiny_hf.full_vocab(raw["vocab_size"])
    )
    return count_forwards(ref), load_model(f"hf:{path}", device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """unmask's tiny random LLaDA2 checkpoint (no reference code needed)."""
    path = save_tiny(tmp_path_factory.mktemp("tiny") / "llada2", "llada2")
    tiny_hf.full_vocab(tiny_llada2_config()["vocab_size"]).save_pretrained(path)
    return load_model(f"hf:{path}", device="cpu")


def test_logits_and_hidden_states_equal_the_reference():
    raw = tiny_llada2_config()
    ref = reference_llada2(raw)
    x = torch.randint(8, 32, (2, 70), generator=torch.Generator().manual_seed(0))
    x[:, 40::3] = MASK
    assert_same_outputs(ref, native_twin(ref, raw), x, block_mask(70, B).log().expand(2, 1, 70, 70))


def canvas(prompt: torch.Tensor, gen_length: int) -> torch.Tensor:
    """The prompt then masks up to LLaDA2 generate()'s total_length (a whole number of blocks)."""
    total = -(-(prompt.shape[1] + gen_length) // B) * B
    x = torch.full((1, total), MASK)
    x[:, : prompt.shape[1]] = prompt
    return x


@pytest.mark.parametrize("cache", ["none", "block"])
@pytest.mark.parametrize(
    "prompt_length, gen_length, steps, threshold, temperature, top_k, top_p",
    [
        (5, 59, 32, 0.95, 0.0, None, None),
        (37, 90, 8, 0.2, 0.0, None, None),
        (32, 64, 4, 0.5, 0.0, None, None),
        (5, 59, 8, 0.5, 0.8, None, None),
        (37, 60, 4, 0.3, 1.0, 20, 0.9),
    ],
)
def test_decoding_equals_llada2_generate(
    official, cache, prompt_length, gen_length, steps, threshold, temperature, top_k, top_p
):
    """The same tokens up to the first EOS and the same number of forwards as LLaDA2 generate() (its block-aligned
    first block, per-block schedule, strict threshold with the schedule as floor, EOS stop): greedy, and sampling
    on a batch-1 row with torch's global generator seeded alike (the same draws: one multinomial per position of
    the current block per step, as LLaDA2 draws them)."""
    ref, model = official
    for seed in range(2):
        prompt = torch.randint(8, 32, (1, prompt_length), generator=torch.Generator().manual_seed(seed))
        ref.calls = 0
        torch.manual_seed(100 + seed)
        want = ref.generate(
            prompt,
            temperature=temperature,
            block_length=B,
            steps=steps,
            gen_length=gen_length,
            threshold=threshold,
            top_k=top_k,
            top_p=top_p,
            eos_id=EOS,
            mask_id=MASK,
        )[0]
        config = SamplingConfig(
            steps=steps, cache=cache, temperature=temperature, top_k=top_k, top_p=top_p, suppress_mask_token=False
        )
        torch.manual_seed(100 + seed)
        policy = get_policy(f"scheduled_threshold:{threshold}")
        out = generate(model, canvas(prompt, gen_length), policy, config, gen_start=prompt_length)
        got = out.sequences[0, prompt_length : prompt_length + gen_length]
        eos = (got == EOS).nonzero()
        got = got[: int(eos[0]) + 1] if len(eos) else got
        assert torch.equal(got, want), (seed, got.tolist(), want.tolist())
        assert int(out.nfe[0]) == ref.calls


def test_block_cache_is_exact_and_runs_fewer_positions(tiny):
    """--cache block gives --cache none's tokens and forwards on a left-padded batch, running fewer positions."""
    prompts = torch.randint(8, 32, (3, 21), generator=torch.Generator().manual_seed(1))
    x = torch.cat([prompts, torch.full((3, 75), MASK)], 1)
    attention = torch.ones_like(x)
    attention[1, :6] = 0  # two left-padded rows
    attention[2, :12] = 0
    x[attention == 0] = 0
    runs = {
        cache: generate(
            tiny,
            x,
            get_policy("scheduled_threshold:0.5"),
            SamplingConfig(steps=8, cache=cache),
            attention,
            gen_start=21,
        )
        for cache in ("none", "block")
    }
    assert torch.equal(runs["none"].sequences, runs["block"].sequences)
    assert torch.equal(runs["none"].nfe, runs["block"].nfe)
    assert (runs["block"].positions_run < runs["none"].positions_run).all()


def test_attention_is_block_causal(tiny):
    """Changing tokens of a later block leaves every earlier position's logits unchanged; a change inside a
    block reaches the whole block (bidirectional within it)."""
    x = torch.randint(8, 32, (1, 96), generator=torch.Generator().manual_seed(2))
    base = tiny(x).logits
    later = x.clone()
    later[0, 70] = 9
    torch.testing.assert_close(tiny(later).logits[:, :64], base[:, :64], atol=0, rtol=0)
    inside = x.clone()
    inside[0, 60] = 9
    assert not torch.allclose(tiny(inside).logits[:, 32], base[:, 32])


def test_block_options_that_do_not_fit_are_refused(tiny):
    x = torch.cat([torch.full((1, 5), 9), torch.full((1, 27), MASK)], 1)
    policy = get_policy("scheduled_threshold:0.9")
    cases = {
        "--cache block": SamplingConfig(cache="dual"),
        "drop --block-length": SamplingConfig(block_length=16),
        "--sampler block": SamplingConfig(sampler="llada"),
        "option(s) of LLaDA generate()": SamplingConfig(cfg_scale=1.0),
    }
    for message, config in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            generate(tiny, x, policy, config, gen_start=5)


def test_block_cache_on_a_bidirectional_model_is_refused():
    from unmask.engine.cache import cache_strategy

    model = load_model("sudoku4", device="cpu")
    with pytest.raises(ValueError, match="exact only for block-causal"):
        cache_strategy(model, "block")


@pytest.mark.parametrize(
    "override, message",
    [({"rope_scaling": {"type": "yarn"}}, "rope_scaling"), ({"num_experts": None}, "dense variant")],
)
def test_variants_are_refused_with_one_error(override, message):
    with pytest.raises(ValueError, match=message):
        llada2_config(tiny_llada2_config(**override))


def test_checkpoint_names_round_trip():
    model = randomize_(LLaDA2(llada2_config(tiny_llada2_config())))
    for name in model.state_dict():
        assert LLaDA2.rename(LLaDA2.checkpoint_name(name)) == name
    stored = {LLaDA2.checkpoint_name(n) for n in model.state_dict()}
    assert "model.layers.1.mlp.gate.expert_bias" in stored
    assert "model.layers.0.attention.query_key_value.weight" in stored


def test_generate_api_and_lm_eval_decode_with_the_block_sampler(tiny):
    """unmask.generate takes LLaDA2 generate()'s names (threshold: the scheduled_threshold policy) and refuses
    LLaDA's / Dream's; lm-eval's unmask model decodes a block-causal model with the block sampler."""
    from unmask import generate as generate_text

    out = generate_text(tiny, None, ["what is 1 + 2 ?"], gen_length=12, steps=4, threshold=0.5, return_order=True)
    assert isinstance(out.texts[0], str) and 1 <= int(out.nfe[0]) <= 8  # at most 4 steps in each of its 2 blocks
    with pytest.raises(ValueError, match="not options of LLaDA2 generate"):
        generate_text(tiny, None, ["what is 1 + 2 ?"], remasking="low_confidence")
    pytest.importorskip("lm_eval")
    from unmask.integrations.lm_eval import UnmaskLM

    lm = UnmaskLM(model=tiny, policy="scheduled_threshold:0.5", steps=4, gen_length=12)
    assert isinstance(lm.generate_texts(["what is 1 + 2 ?"], 12, [], [0])[0], str)
