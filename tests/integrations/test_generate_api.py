"""``unmask.generate``: LLaDA's and Dream's argument names, text out, LLaDA's own tokens on the same inputs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import tiny_hf  # noqa: E402
from llada_reference import llada_module  # noqa: E402

import unmask  # noqa: E402
from unmask.engine.config import SamplingConfig  # noqa: E402
from unmask.engine.loop import generate as engine_generate  # noqa: E402
from unmask.engine.streams import ExampleStreams  # noqa: E402
from unmask.integrations.upstream import SamplerOutput, policy_spec  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.policies import get_policy  # noqa: E402
from unmask.tasks.math import decode_completions, encode_prompts  # noqa: E402

PROMPTS = ["what is 1 + 2 ?", "what is the answer to 9 - 7 ?"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    path = tiny_hf.save_bert(tmp_path_factory.mktemp("bert"))
    return load_model(f"hf:{path}", device="cpu")


def test_llada_names_give_llada_generate_tokens(bert):
    llada_generate = llada_module("generate").generate
    prompt = torch.tensor([bert.tokenizer(PROMPTS[0])["input_ids"]])
    expected = llada_generate(
        bert.model,
        prompt,
        steps=4,
        gen_length=8,
        block_length=4,
        temperature=0.0,
        remasking="low_confidence",
        mask_id=bert.mask_id,
    )
    out = unmask.generate(
        bert,
        None,
        prompt,
        steps=4,
        gen_length=8,
        block_length=4,
        temperature=0.0,
        remasking="low_confidence",
        return_order=True,
    )
    assert isinstance(out, SamplerOutput)
    assert torch.equal(out.sequences, expected)
    generated = expected[0, prompt.shape[1] :].tolist()
    end = next((i for i, t in enumerate(generated) if t in bert.stop_ids), len(generated))
    assert out.texts == [bert.tokenizer.decode(generated[:end], skip_special_tokens=True).strip()]  # text up to EOS
    assert out.order.shape == (1, 8) and out.nfe.tolist() == [4]


def test_dream_names_choose_the_dream_loop_and_its_alg(bert):
    texts = unmask.generate(bert, None, PROMPTS, max_new_tokens=6, steps=3, alg="entropy", temperature=0.5, top_p=0.9)
    ids = [bert.tokenizer(p)["input_ids"] for p in PROMPTS]
    enc = encode_prompts(ids, bert, 6)
    config = SamplingConfig(steps=3, temperature=0.5, top_p=0.9, sampler="dream")
    out = engine_generate(
        bert,
        enc.input_ids,
        get_policy("entropy"),
        config,
        enc.attention_mask,
        enc.gen_start,
        ExampleStreams(0, range(2)),
    )

    assert texts == decode_completions(out.sequences, bert, 6)


def test_a_transformers_model_and_tensor_prompts_give_the_same_text(bert):
    texts = unmask.generate(bert, None, PROMPTS, gen_length=6)
    assert texts == unmask.generate(bert.model, bert.tokenizer, PROMPTS, gen_length=6)
    batch = bert.tokenizer(PROMPTS, padding=True, return_tensors="pt", padding_side="left")
    assert texts == unmask.generate(
        bert, None, batch["input_ids"], attention_mask=batch["attention_mask"], gen_length=6
    )
    assert texts == unmask.generate(bert, None, PROMPTS, gen_length=6, batch_size=1)  # per-example streams


@pytest.mark.parametrize(
    ("args", "spec"),
    [
        ((None, "low_confidence", None, None), "confidence"),
        ((None, "random", None, None), "random"),
        ((None, None, "topk_margin", None), "margin"),
        ((None, None, "maskgit_plus", 0.5), "confidence:alg_temp=0.5"),
        ((None, None, "origin", None), "origin"),
        (("threshold:0.9", None, None, None), "threshold:0.9"),
        ((None, None, None, None), "confidence"),
    ],
)
def test_remasking_and_alg_name_policies(args, spec):
    assert policy_spec(*args) == spec


def test_bad_arguments_are_refused(bert):
    with pytest.raises(ValueError, match="LLaDA generate\\(\\) arguments \\(block_length\\) and Dream"):
        unmask.generate(bert, None, PROMPTS, block_length=4, alg="entropy", steps=2)
    with pytest.raises(ValueError, match="policy and remasking both"):
        unmask.generate(bert, None, PROMPTS, policy="margin", remasking="random")
    with pytest.raises(ValueError, match="unknown alg 'maskgit'; Dream's are"):
        unmask.generate(bert, None, PROMPTS, alg="maskgit")
    with pytest.raises(ValueError, match="needs its tokenizer"):
        unmask.generate(bert.model, None, PROMPTS)
    with pytest.raises(ValueError, match="has no tokenizer"):
        unmask.generate("sudoku4", None, PROMPTS)


def test_a_training_model_is_left_as_it_was(bert):
    bert.model.train()
    bert.model.requires_grad_(True)
    unmask.generate(bert.model, bert.tokenizer, PROMPTS[:1], gen_length=2)
    assert bert.model.training and all(p.requires_grad for p in bert.model.parameters())
    bert.model.eval().requires_grad_(False)
