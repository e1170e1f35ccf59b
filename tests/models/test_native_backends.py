"""Native LLaDA / Dream backends against the upstream modeling code (tests/reference_models.py), loading, checks."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from reference_models import (  # noqa: E402
    MASK,
    PAD,
    import_dream,
    native_twin,
    reference_dream,
    reference_llada,
    save_official,
    tiny_dream_config,
    tiny_llada_config,
)
from tiny_hf import save_bert, tokenizer  # noqa: E402

from unmask.models import load_model  # noqa: E402
from unmask.models.hf import native_backend, self_check_remote  # noqa: E402

FAMILIES = {"llada": (reference_llada, tiny_llada_config), "dream": (reference_dream, tiny_dream_config)}
EXACT = {"atol": 1e-5, "rtol": 1e-5}


def reference(family: str, **overrides):
    make, config = FAMILIES[family]
    raw = config(**overrides)
    return make(raw), raw


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random ids of the tiny tokenizer's words (ids 8..31) with a few masks."""
    ids = torch.randint(8, 32, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, length // 2 :: 3] = MASK
    return ids


def load_cpu(path, **options):
    return load_model(f"hf:{path}", **{"device": "cpu", **options})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (reference model, raw config, official sharded checkpoint directory of its weights)."""
    out = {}
    for family in FAMILIES:
        ref, raw = reference(family)
        out[family] = ref, raw, save_official(ref, raw, tmp_path_factory.mktemp(family), shards=3)
    return out


# LLaDA's configs may tie the head to the embeddings (weight_tying); Dream-7B does not, and Dream's code cannot
# build a tied model under transformers 5 (its _tied_weights_keys is a list)
@pytest.mark.parametrize("family, tied", [("llada", False), ("llada", True), ("dream", False)])
def test_logits_and_hidden_states_equal_the_reference(family, tied):
    ref, raw = reference(family, **({"weight_tying": tied} if family == "llada" else {}))
    native = native_twin(ref, raw)
    x = tokens(3, 11)
    with torch.no_grad():
        want = ref(input_ids=x, output_hidden_states=True)
        got = native(input_ids=x, output_hidden_states=True)
    torch.testing.assert_close(got.logits, want.logits, **EXACT)
    assert len(got.hidden_states) == len(want.hidden_states) == raw.get("n_layers", raw.get("num_hidden_layers")) + 1
    for g, w in zip(got.hidden_states, want.hidden_states):
        torch.testing.assert_close(g, w, **EXACT)


def test_dream_padding_mask_equals_the_reference():
    """Dream's code honours a key-padding mask: with the same mask and positions, real rows agree."""
    ref, raw = reference("dream")
    native = native_twin(ref, raw)
    x = tokens(2, 10)
    real = torch.ones_like(x, dtype=torch.bool)
    real[0, :4] = False
    x[0, :4] = PAD
    with torch.no_grad():
        want = ref(input_ids=x, attention_mask=real[:, None, None, :].expand(2, 1, 10, 10)).logits
        got = native(input_ids=x, attention_mask=real.long(), position_ids=torch.arange(10)[None].expand(2, -1)).logits
    torch.testing.assert_close(got[real], want[real], **EXACT)


@pytest.mark.parametrize("family", FAMILIES)
def test_official_sharded_checkpoint_round_trips(checkpoints, family, capfd):
    ref, raw, path = checkpoints[family]
    assert len(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]) == len(
        [k for k in ref.state_dict() if not k.endswith("inv_freq")]
    )
    capfd.readouterr()
    mdm = load_cpu(path)
    assert "to instantiate a model of type" not in capfd.readouterr().err  # transformers' misleading config warning
    assert type(mdm.model).__name__ == ("LLaDA" if family == "llada" else "Dream")
    assert (mdm.mask_id, mdm.vocab_size, mdm.hidden_size, mdm.max_length) == (MASK, 64, 32, 1024)
    assert mdm.style.logit_shift == (family == "dream")
    x = tokens(2, 9)
    out = mdm(x, output_hidden_states=True)
    with torch.no_grad():
        want = ref(input_ids=x, output_hidden_states=True)
    logits, hidden = want.logits, want.hidden_states[-1]
    if family == "dream":  # the MDM shifts Dream's logits so that position i reads the prediction for i
        logits, hidden = torch.cat([logits[:, :1], logits[:, :-1]], 1), torch.cat([hidden[:, :1], hidden[:, :-1]], 1)
    decodable = len(mdm.tokenizer)
    torch.testing.assert_close(out.logits[..., :decodable], logits[..., :decodable], **EXACT)
    assert torch.isinf(out.logits[..., decodable:]).all()  # embedding rows past the tokenizer are never chosen
    torch.testing.assert_close(out.hidden_states, hidden, **EXACT)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_real_tokens_logits_do_not_depend_on_left_padding(checkpoints, family):
    ref, raw, path = checkpoints[family]
    mdm = load_cpu(path)
    x = tokens(1, 8)
    alone = mdm(x).logits
    for pad in (1, 5):
        padded = torch.cat([torch.full((1, pad), PAD), x], 1)
        attention = torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.ones_like(x)], 1)
        batch = mdm(
            torch.cat([padded, torch.cat([x, torch.full((1, pad), MASK)], 1)]),
            torch.cat([attention, torch.ones_like(attention)]),
        ).logits
        skip = 1 if family == "dream" else 0  # Dream's first real position reads the (padded) one before it
        torch.testing.assert_close(batch[0, pad + skip :], alone[0, skip:], **EXACT)
    with torch.no_grad():  # and the unpadded row is the reference's (LLaDA's code ignores padding, issue #90)
        want = ref(input_ids=x).logits[..., : len(mdm.tokenizer)]
    got = alone[..., : len(mdm.tokenizer)]
    torch.testing.assert_close(
        got[:, 1:] if family == "dream" else got, want[:, :-1] if family == "dream" else want, **EXACT
    )


def test_cached_forwards_equal_the_reference_caches():
    """Partial forwards on cached keys/values (transformers DynamicCache) equal LLaDA's own cache paths as Fast-dLLM
    drives them: a prefix cache (past_key_values) and a dual cache (prefix + suffix, block replaced in place)."""
    from transformers import DynamicCache

    ref, raw = reference("llada")
    native = native_twin(ref, raw)
    x, lo, hi = tokens(2, 12), 4, 8
    with torch.no_grad():
        past = ref(input_ids=x[:, :8], use_cache=True).past_key_values
        want = ref(input_ids=x[:, 8:], past_key_values=past, use_cache=True).logits
        cache = DynamicCache(config=native.config)
        native(input_ids=x[:, :8], cache=cache, use_cache=True)
        got = native(input_ids=x[:, 8:], cache=cache, use_cache=True).logits
        assert cache.get_seq_length() == 12
        torch.testing.assert_close(got, want, **EXACT)

        past = ref(input_ids=x, use_cache=True).past_key_values
        block = torch.zeros(1, 12, dtype=torch.bool)
        block[:, lo:hi] = True
        want = ref(input_ids=x[:, lo:hi], past_key_values=past, use_cache=True, replace_position=block).logits
        full = DynamicCache(config=native.config)
        native(input_ids=x, cache=full, use_cache=True)
        outside = [
            (
                torch.cat([l.keys[..., :lo, :], l.keys[..., hi:, :]], -2),
                torch.cat([l.values[..., :lo, :], l.values[..., hi:, :]], -2),
            )
            for l in full.layers
        ]
        dual = DynamicCache(ddp_cache_data=outside, config=native.config)
        got = native(input_ids=x[:, lo:hi], position_ids=torch.arange(lo, hi)[None], cache=dual, use_cache=True).logits
        torch.testing.assert_close(got, want, **EXACT)
        dual.crop(-(hi - lo))  # the block's own entries leave again: ready for the next step
        assert dual.get_seq_length() == 12 - (hi - lo)


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_native_weights(checkpoints, family):
    mdm = load_cpu(checkpoints[family][2], dtype="bfloat16")
    out = mdm(tokens(1, 6), output_hidden_states=True)
    assert (
        mdm.model.dtype == torch.bfloat16
        and out.logits.dtype == torch.bfloat16
        and torch.isfinite(out.hidden_states).all()
    )


@pytest.fixture
def private_modules_cache(tmp_path, monkeypatch):
    """Remote code imported from a private modules cache, and every trace of it gone afterwards: the
    `transformers_modules` package (other remote-code tests import it from their own cache) and the "llada"
    AutoConfig registration that LLaDA's configuration_llada.py makes when imported."""
    import transformers.dynamic_module_utils as dynamic
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    def dynamic_modules() -> dict:
        return {m: sys.modules[m] for m in list(sys.modules) if m.split(".")[0] == "transformers_modules"}

    before = dynamic_modules()
    for name in before:
        del sys.modules[name]
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p) / "transformers_modules").is_dir()])
    monkeypatch.setattr(CONFIG_MAPPING, "_extra_content", dict(CONFIG_MAPPING._extra_content))
    yield
    for name in dynamic_modules():
        del sys.modules[name]
    sys.modules.update(before)


@pytest.mark.parametrize("family, native", [("llada", "LLaDA"), ("dream", "Dream")])
def test_remote_code_incompatibility_names_the_native_backend(tmp_path, private_modules_cache, family, native):
    ref, raw = reference(family)
    path = save_official(ref, raw, tmp_path / family, with_code=True)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        load_cpu(path, native=False)
    with pytest.raises(ValueError, match=f"does not run under transformers .*native {native} backend"):
        load_cpu(path, native=False, trust_remote_code=True)
    assert type(load_cpu(path, trust_remote_code=True).model).__name__ == native  # the opt-in alone keeps native


def test_remote_self_check_rederives_rope_and_catches_wrong_code(monkeypatch):
    ref, raw = reference("dream")
    x = tokens(1, 8)
    with torch.no_grad():
        want = ref(input_ids=x).logits
        for module in ref.modules():  # what loading Dream's code under transformers 5 leaves behind
            if hasattr(module, "inv_freq"):
                module.inv_freq.copy_(torch.tensor([1e31, 0.0, 1e31, 0.0]))
    self_check_remote(ref, raw, native_backend("Dream"), "hf:dream")
    torch.testing.assert_close(ref(input_ids=x).logits, want, **EXACT)
    modeling = import_dream().modeling_dream
    monkeypatch.setattr(
        modeling, "apply_rotary_pos_emb", lambda q, k, cos, sin, **kw: (q, k)
    )  # code that computes wrong
    with pytest.raises(ValueError, match="different logits than the native Dream backend"):
        self_check_remote(ref, raw, native_backend("Dream"), "hf:dream")


def test_checkpoint_tensors_that_do_not_fit_name_the_fix(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    ref, raw, path = checkpoints["llada"]

    def copy(name, edit=None, config=None):
        target = save_official(ref, config or raw, tmp_path / name, shards=3)
        if edit:
            shard = next(iter(sorted(target.glob("model-*.safetensors"))))
            tensors = load_file(str(shard))
            edit(tensors)
            save_file(tensors, str(shard))
        return target

    drop = copy("missing", lambda t: t.pop(next(iter(t))))
    with pytest.raises(ValueError, match="missing 1 parameters .*config.json belongs to these weights"):
        load_cpu(drop)
    extra = copy("extra", lambda t: t.update({"model.transformer.blocks.0.q_norm.weight": torch.ones(32)}))
    with pytest.raises(ValueError, match="1 parameters the LLaDA architecture does not have .*q_norm"):
        load_cpu(extra)
    with pytest.raises(
        ValueError, match="wrong shapes: .*blocks.0.ff_proj.weight is \\(48, 32\\), config.json implies \\(40, 32\\)"
    ):
        load_cpu(copy("shape", config={**raw, "mlp_hidden_size": 40}))
    gone = copy("shard")
    (gone / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match="1 of the 3 shards listed in model.safetensors.index.json are missing \\(model-00002-of-00003.safetensors\\); download",
    ):
        load_cpu(gone)
    with pytest.raises(ValueError, match="block_type='sequential'.*--remote-code --trust-remote-code"):
        load_cpu(copy("variant", config={**raw, "block_type": "sequential"}))


def test_bad_options_name_the_fix(checkpoints, tmp_path):
    path = checkpoints["dream"][2]
    bigger = tmp_path / "bigger-tokenizer"
    tokenizer(extra_words=50).save_pretrained(bigger)
    with pytest.raises(
        ValueError, match="tokenizer has 82 tokens but the model predicts only 64.*tokenizer/model mismatch"
    ):
        load_cpu(path, tokenizer=str(bigger))
    with pytest.raises(ValueError, match="no native backend for model_type 'bert'"):
        load_cpu(save_bert(tmp_path / "bert"), native=True)
    with pytest.raises(ValueError, match="--hf-style llada does not apply to the native Dream backend"):
        load_cpu(path, style="llada")
    with pytest.raises(ValueError, match="needs a CUDA GPU and bitsandbytes"):
        load_cpu(path, load_in_4bit=True)


def test_a_tokenizer_that_needs_its_code_falls_back_to_the_family_tokenizer(checkpoints, tmp_path):
    """Dream's tokenizer_config names tokenization_dream.DreamTokenizer (remote code); the native path uses
    transformers' Qwen2Tokenizer instead of running it."""
    ref, raw, _ = checkpoints["dream"]
    path = save_official(ref, raw, tmp_path / "dream-tokenizer-code", shards=1)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.update(
        tokenizer_class="DreamTokenizer", auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}
    )
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    mdm = load_cpu(path)
    assert type(mdm.tokenizer).__name__ == "Qwen2Tokenizer" and mdm.mask_id == MASK


def test_cli_flags_map_to_load_options():
    import argparse

    from unmask.cli import main as cli

    parser = argparse.ArgumentParser()
    cli._add_hf(parser)
    args = parser.parse_args(["--remote-code", "--trust-remote-code", "--device-map", "auto", "--load-in-4bit"])
    assert cli.hf_options(args)["model_options"] == {
        "native": False,
        "trust_remote_code": True,
        "device_map": "auto",
        "load_in_4bit": True,
    }
    assert cli.hf_options(parser.parse_args([]))["model_options"] == {}
