"""``unmask make-tiny``: tiny random LLaDA / Dream checkpoints in the real layout, loadable with ``hf:`` and
long enough for the models page's examples, written without the reference code."""

import json

import pytest
import torch
from safetensors import safe_open

from unmask.cli.main import main
from unmask.models import load_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["make-tiny", "--output-dir", str(out)]) == 0
    return out


def test_make_tiny_writes_each_family_in_its_upstream_layout(tiny_dir):
    names = {}
    for family in ("llada", "dream"):
        files = sorted(p.name for p in (tiny_dir / family).iterdir())
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files), files
        with safe_open(str(tiny_dir / family / "model.safetensors"), framework="pt") as f:
            names[family] = set(f.keys())
    assert "model.transformer.blocks.1.attn_out.weight" in names["llada"]  # LLaDA's own names, not Llama's
    assert "model.transformer.ff_out.weight" in names["llada"]
    assert "model.layers.1.self_attn.q_proj.bias" in names["dream"]  # Qwen2's q/k/v biases
    assert json.loads((tiny_dir / "llada" / "config.json").read_text())["max_sequence_length"] == 1024


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llada", "dream"])
def test_a_tiny_checkpoint_runs_the_models_page_example_with_256_tokens(tiny_dir, family, shared_data):
    """docs/models.md's Python example (GSM8K, 256 generated tokens; LLaDA in blocks of 32), on 2 examples and
    32 steps."""
    from unmask.engine.config import SamplingConfig
    from unmask.engine.loop import generate
    from unmask.policies import get_policy
    from unmask.tasks import get_task

    model = load_model(f"hf:{tiny_dir / family}", device="cpu")
    task = get_task("gsm8k", gen_length=256)
    examples = task.load(shared_data / "gsm8k_test.jsonl")[:2]
    batch = task.encode(examples, model)
    out = generate(
        model,
        batch.input_ids,
        get_policy("confidence"),
        SamplingConfig(steps=32, block_length=32 if family == "llada" else None),
        batch.attention_mask,
        batch.gen_start,
    )
    assert out.sequences.shape[1] == batch.input_ids.shape[1] and (out.sequences != model.mask_id).all()
    assert task.score(examples, task.decode(examples, out.sequences, model)).solved.shape == (2,)


def test_the_tiny_llada_is_the_upstream_model(tiny_dir):
    """With the reference code present (skipped otherwise), LLaDA's own LLaDAModelLM loads the weights strictly
    and gives the native backend's logits."""
    from reference_models import reference_llada
    from safetensors.torch import load_file

    reference = reference_llada(json.loads((tiny_dir / "llada" / "config.json").read_text()), seed=1)
    reference.load_state_dict(load_file(str(tiny_dir / "llada" / "model.safetensors")), strict=True)
    ids = torch.randint(0, 30, (2, 12), generator=torch.Generator().manual_seed(0))
    native = load_model(f"hf:{tiny_dir / 'llada'}", device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(native.model(input_ids=ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_make_tiny_refuses_an_unknown_family_a_short_context_and_a_used_directory(tiny_dir, capsys):
    assert main(["make-tiny", "--output-dir", str(tiny_dir), "--families", "llada,gpt2"]) == 2
    assert "unknown 'gpt2'; give a comma list of llada, dream" in capsys.readouterr().err
    assert main(["make-tiny", "--output-dir", str(tiny_dir / "new"), "--context", "4"]) == 2
    assert "context (--context) must be an integer >= 8, got 4" in capsys.readouterr().err
    assert main(["make-tiny", "--output-dir", str(tiny_dir)]) == 2
    assert "is not empty; give a new directory" in capsys.readouterr().err
