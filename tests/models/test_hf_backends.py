"""Hugging Face backends on tiny models built here, saved and re-loaded through ``from_pretrained``."""

import json

import pytest
import torch
from tiny_hf import WORDS, save_bert, save_llama, save_remote_llada, tokenizer

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.models import load_model
from unmask.models.hf import HFMaskedDiffusionModel
from unmask.policies import get_policy

transformers = pytest.importorskip("transformers")
MASK = WORDS.index("[MASK]")
PAD = WORDS.index("[PAD]")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_llama(tmp_path_factory.mktemp("llama"))


def left_pad(prompts: list[list[int]], gen_length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prompts left-padded to a common length, then ``gen_length`` masks (what text tasks build)."""
    P = max(map(len, prompts))
    ids = torch.full((len(prompts), P + gen_length), PAD)
    ids[:, P:] = MASK
    attention = torch.ones_like(ids)
    for row, p in enumerate(prompts):
        ids[row, P - len(p) : P] = torch.tensor(p)
        attention[row, : P - len(p)] = 0
    return ids, attention, P


def reference_generate(
    raw, prompt: list[int], gen_length: int, block_length: int, steps: int, shift: bool
) -> torch.Tensor:
    """LLaDA ``generate()`` semantics written out for one unpadded prompt: blocks left to right, each block's
    masks spread evenly over its steps (earlier steps take the remainder), max-confidence positions revealed."""
    x = torch.tensor([prompt + [MASK] * gen_length])
    P, per_block = len(prompt), steps // (gen_length // block_length)
    for lo in range(P, P + gen_length, block_length):
        hi = lo + block_length
        n = int((x[0, lo:hi] == MASK).sum())
        for k in [n // per_block + (i < n % per_block) for i in range(per_block)]:
            with torch.no_grad():
                logits = raw(input_ids=x).logits[0].float()
            if shift:
                logits = torch.cat([logits[:1], logits[:-1]])
            logits[:, MASK] = float("-inf")
            conf, tokens = logits.softmax(-1).max(-1)
            conf[:lo], conf[hi:] = float("-inf"), float("-inf")
            conf[x[0] != MASK] = float("-inf")
            pick = conf.topk(k).indices
            x[0, pick] = tokens[pick]
    return x[0, P:]


def load_cpu(name: str, **options):
    """The tests compare with raw transformers models on the CPU, so the MDM stays there on GPU machines too."""
    return load_model(name, **{"device": "cpu", **options})


PROMPTS = [[2, 8, 9, 10, 3], [2, 11, 12, 13, 14, 15, 16, 3]]


def test_masked_lm_loads_like_a_user_checkpoint(bert_dir):
    mdm = load_cpu(f"hf:{bert_dir}")
    raw = transformers.AutoModelForMaskedLM.from_pretrained(bert_dir, use_safetensors=True)
    assert isinstance(mdm, HFMaskedDiffusionModel) and mdm.style.name == "masked_lm"
    assert (mdm.mask_id, mdm.vocab_size, mdm.hidden_size, mdm.max_length) == (MASK, len(WORDS), 16, 128)
    assert mdm.name == f"hf:{bert_dir}" and mdm.device.type == "cpu" and mdm.model.dtype == torch.float32
    assert not any(p.requires_grad for p in mdm.parameters())
    x = torch.tensor([[2, 8, 9, MASK, MASK, 3]] * 2)
    with torch.enable_grad():
        out = mdm(x, output_hidden_states=True)
    assert out.logits.shape == (2, 6, len(WORDS)) and out.hidden_states.shape == (2, 6, 16)
    assert out.logits.grad_fn is None and out.hidden_states.grad_fn is None
    want = raw(input_ids=x, output_hidden_states=True)
    torch.testing.assert_close(out.logits, want.logits)
    torch.testing.assert_close(out.hidden_states, want.hidden_states[-1])
    embeddings = load_cpu(f"hf:{bert_dir}", hidden_layer=0)(x, output_hidden_states=True).hidden_states
    torch.testing.assert_close(embeddings, want.hidden_states[0])
    assert mdm(x).hidden_states is None


def test_dream_style_shifts_logits_and_features_by_one(llama_dir):
    mdm = load_cpu(f"hf:{llama_dir}", style="dream")
    raw = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, use_safetensors=True)
    x = torch.tensor([[2, 8, 9, 10, MASK, MASK, MASK]])
    out = mdm(x, output_hidden_states=True)
    want = raw(input_ids=x, output_hidden_states=True)
    # Dream's logits at i predict token i + 1: position i reads the model's output at i - 1 (position 0 its own)
    torch.testing.assert_close(out.logits[:, 1:], want.logits[:, :-1])
    torch.testing.assert_close(out.logits[:, 0], want.logits[:, 0])
    torch.testing.assert_close(out.hidden_states[:, 1:], want.hidden_states[-1][:, :-1])
    assert mdm.mask_id == MASK and mdm.stop_ids == (WORDS.index("[EOS]"),)


@pytest.mark.parametrize("style", ["masked_lm", "dream", "llada"])
def test_left_padding_leaves_real_positions_unchanged(bert_dir, style):
    mdm = load_cpu(f"hf:{bert_dir}", style=style)
    ids, attention, P = left_pad(PROMPTS, 4)
    batched = mdm(ids, attention).logits
    short = len(PROMPTS[0])
    alone = mdm(ids[:1, P - short :]).logits
    skip = 1 if style == "dream" else 0  # Dream's first real position reads the (padded) one before it
    torch.testing.assert_close(batched[0, P - short + skip :], alone[0, skip:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("style", ["masked_lm", "dream"])
def test_confidence_decoding_matches_a_reference_loop(bert_dir, style):
    mdm = load_cpu(f"hf:{bert_dir}", style=style)
    ids, attention, P = left_pad(PROMPTS, 8)
    out = generate(
        mdm, ids, get_policy("confidence"), SamplingConfig(steps=4, block_length=4, sampler="llada"), attention, P
    )
    for row, prompt in enumerate(PROMPTS):
        want = reference_generate(mdm.model, prompt, gen_length=8, block_length=4, steps=4, shift=style == "dream")
        assert torch.equal(out.sequences[row, P:], want)
    assert out.nfe.tolist() == [4, 4]


def test_confidence_decoding_matches_reference_on_a_causal_stand_in(llama_dir):
    mdm = load_cpu(f"hf:{llama_dir}", style="dream")
    prompts = [[2, 8, 9, 10, 3], [2, 11, 12, 13, 3]]
    ids, attention, P = left_pad(prompts, 6)
    out = generate(
        mdm, ids, get_policy("confidence"), SamplingConfig(steps=4, block_length=3, sampler="llada"), attention, P
    )
    for row, prompt in enumerate(prompts):
        assert torch.equal(out.sequences[row, P:], reference_generate(mdm.model, prompt, 6, 3, 4, shift=True))


def test_block_schedule_follows_llada(bert_dir):
    mdm = load_cpu(f"hf:{bert_dir}")
    ids, attention, P = left_pad(PROMPTS, 12)
    out = generate(mdm, ids, get_policy("confidence"), SamplingConfig(steps=6, block_length=4), attention, P)
    assert out.nfe.tolist() == [6, 6]
    for row in out.order:
        blocks = row.view(3, 4)  # 3 blocks of 4, 2 steps each, 2 reveals per step
        for b in range(3):
            assert sorted(blocks[b].tolist()) == [2 * b, 2 * b, 2 * b + 1, 2 * b + 1]
    one_per_step = generate(mdm, ids, get_policy("confidence"), SamplingConfig(), attention, P)
    assert one_per_step.nfe.tolist() == [12, 12]
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        generate(mdm, ids, get_policy("confidence"), SamplingConfig(steps=5, block_length=4), attention, P)


def test_sampling_is_deterministic_under_a_seed(bert_dir):
    mdm = load_cpu(f"hf:{bert_dir}")
    ids, attention, P = left_pad(PROMPTS, 8)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return generate(mdm, ids, get_policy("random"), SamplingConfig(temperature=1.0), attention, P, gen).sequences

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_remote_code_model_needs_the_opt_in(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    path = save_remote_llada(tmp_path / "llada")
    with pytest.raises(
        ValueError, match="native LLaDA backend implements the LLaMA-style"
    ):  # default: native, no remote code
        load_cpu(f"hf:{path}", trust_remote_code=True)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        load_cpu(f"hf:{path}", native=False)
    mdm = load_cpu(f"hf:{path}", native=False, trust_remote_code=True)  # BERT-shaped: finite-logit self-check only
    assert mdm.style.name == "llada" and mdm.tokenizer.mask_token_id is None
    assert mdm.mask_id == MASK  # from config.mask_token_id, as LLaDA's 126336
    assert type(mdm.model).__name__ == "TinyLLaDAModelLM"
    assert mdm(torch.tensor([[2, 8, MASK, 3]])).logits.shape == (1, 4, len(WORDS))


def test_model_without_a_mask_token_names_the_fix(tmp_path):
    path = save_bert(tmp_path / "nomask", mask=False)
    with pytest.raises(ValueError, match="--mask-id"):
        load_cpu(f"hf:{path}")
    assert load_cpu(f"hf:{path}", mask_id=MASK).mask_id == MASK
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        load_cpu(f"hf:{path}", mask_id=len(WORDS))


def test_tokenizer_model_mismatch_is_refused(tmp_path, bert_dir):
    bigger = tmp_path / "bigger-tokenizer"
    tokenizer(extra_words=50).save_pretrained(bigger)
    with pytest.raises(ValueError, match="tokenizer/model mismatch"):
        load_cpu(f"hf:{bert_dir}", tokenizer=str(bigger))
    disagreeing = save_bert(tmp_path / "disagree")
    config = json.loads((disagreeing / "config.json").read_text())
    (disagreeing / "config.json").write_text(json.dumps({**config, "mask_token_id": PAD}))
    with pytest.raises(ValueError, match="mismatch"):
        load_cpu(f"hf:{disagreeing}")


def test_padded_vocabulary_rows_are_never_chosen(tmp_path):
    path = save_bert(tmp_path / "padded-vocab", vocab_size=len(WORDS) + 8)
    mdm = load_cpu(f"hf:{path}")
    logits = mdm(torch.tensor([[2, MASK, 3]])).logits
    assert mdm.vocab_size == len(WORDS) + 8 and torch.isinf(logits[..., len(WORDS) :]).all()


def test_pickled_weights_need_an_explicit_opt_in(tmp_path, bert_dir):
    raw = transformers.AutoModelForMaskedLM.from_pretrained(bert_dir, use_safetensors=True)
    path = tmp_path / "pickled"
    raw.config.save_pretrained(path)
    tokenizer().save_pretrained(path)
    torch.save(raw.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="--allow-pickle"):
        load_cpu(f"hf:{path}")
    assert load_cpu(f"hf:{path}", allow_pickle=True).vocab_size == len(WORDS)


def test_bad_options_and_inputs_name_the_fix(bert_dir, llama_dir):
    with pytest.raises(ValueError, match="--hf-style"):
        load_cpu(f"hf:{llama_dir}")
    with pytest.raises(ValueError, match="unknown hf style"):
        load_cpu(f"hf:{bert_dir}", style="gpt")
    with pytest.raises(ValueError, match="--hf-layer"):
        load_cpu(f"hf:{bert_dir}", hidden_layer=5)
    with pytest.raises(ValueError, match="unknown dtype"):
        load_cpu(f"hf:{bert_dir}", dtype="int8")
    with pytest.raises(ValueError, match="apply to Hugging Face models"):
        load_cpu("sudoku9-base", dtype="bfloat16")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cpu(f"hf:{bert_dir}/missing")
    with pytest.raises(ValueError, match="cannot read the config"):
        load_cpu(f"hf:{bert_dir.parent}")
    mdm = load_cpu(f"hf:{bert_dir}")
    with pytest.raises(ValueError, match="context of 128"):
        mdm(torch.full((1, 129), MASK))


def test_bfloat16_weights(bert_dir):
    mdm = load_cpu(f"hf:{bert_dir}", dtype="bfloat16", device="cpu")
    out = mdm(torch.tensor([[2, 8, MASK, 3]]), output_hidden_states=True)
    assert mdm.model.dtype == torch.bfloat16 and out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()
