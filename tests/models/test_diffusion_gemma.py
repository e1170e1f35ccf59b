"""DiffusionGemma (transformers' ``DiffusionGemmaForBlockDiffusion``) on unmask's engine: the renoised canvas decodes
exactly as transformers' own ``generate()`` (the oracle, installed with transformers), token for token and forward
for forward, and every unmask policy plugs in."""

import pytest
import torch

pytest.importorskip("transformers.models.diffusion_gemma")

from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig  # noqa: E402

from unmask.engine.config import SamplingConfig  # noqa: E402
from unmask.engine.loop import generate  # noqa: E402
from unmask.models import load_model  # noqa: E402
from unmask.models.tiny import EOS, PAD, save_tiny  # noqa: E402
from unmask.policies.resolve import resolve_policy  # noqa: E402

PROMPT = torch.tensor([[2, 10, 11, 12, 13, 3]])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("dg") / "diffusion_gemma", "diffusion_gemma")


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(f"hf:{checkpoint}", device="cpu")


class DecoderCalls:
    """Counts the decoder's forwards (one per denoising step of a batch)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.model.model.decoder.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


def reference(model, prompt, gen, steps, stopping, eos=EOS, attention_mask=None, bound=0.3, seed=7):
    """transformers' DiffusionGemma generate() (entropy-bound acceptance, self-conditioning, adaptive stopping)."""
    stability, confidence = stopping
    calls = DecoderCalls(model)
    torch.manual_seed(seed)
    padding = {} if attention_mask is None else {"attention_mask": attention_mask}
    out = model.model.generate(
        prompt,
        **padding,
        max_new_tokens=gen,
        max_denoising_steps=steps,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=bound),
        t_min=0.4,
        t_max=0.8,
        stability_threshold=stability,
        confidence_threshold=confidence,
        eos_token_id=eos,
        pad_token_id=PAD,
    )
    calls.handle.remove()
    return out.sequences[:, prompt.shape[1] :], calls.n


def ours(model, prompt, gen, steps, stopping, attention_mask=None, bound=0.3, seed=7):
    calls = DecoderCalls(model)
    x = torch.cat([prompt, torch.full((len(prompt), gen), model.mask_id)], 1)
    mask = None if attention_mask is None else torch.cat([attention_mask, torch.ones_like(x[:, prompt.shape[1] :])], 1)
    config = SamplingConfig(steps=steps, stability_threshold=stopping[0], confidence_threshold=stopping[1])
    torch.manual_seed(seed)
    out = generate(model, x, resolve_policy(f"eb:{bound}", model), config, mask, prompt.shape[1])
    calls.handle.remove()
    return out, calls.n


@pytest.mark.parametrize(
    "steps,stopping",
    [(6, (None, None)), (10, (0, 1.0)), (10, (0, 2.0)), (10, (1, 3.0))],
    ids=["max-steps", "confident-mid-canvas", "confident-at-once-then-eos", "stable-and-confident"],
)
def test_decoding_equals_transformers_generate_token_for_token_and_forward_for_forward(model, steps, stopping):
    """Seeded sampling (batch 1): the same global-generator draws in the same order (initial canvas, multinomial,
    renoising), so the same canvases, the same stops and the same final argmax tokens."""
    want, want_forwards = reference(model, PROMPT, 16, steps, stopping)
    out, forwards = ours(model, PROMPT, 16, steps, stopping)
    got = out.sequences[:, PROMPT.shape[1] :]
    assert torch.equal(got[:, : want.shape[1]], want), (got, want)
    assert (got[:, want.shape[1] :] == PAD).all()  # generate() stops after an EOS canvas; unmask pads the rest
    assert forwards == want_forwards == int(out.nfe[0])


def test_the_stop_settings_above_do_stop_a_canvas_early(model):
    """So the parity above covers adaptive stopping (a random model's argmax never holds still, hence the stability
    half is checked against transformers' criteria directly below)."""
    assert int(ours(model, PROMPT, 16, 10, (0, 1.0))[0].nfe[0]) == 17
    assert int(ours(model, PROMPT, 16, 10, (None, None))[0].nfe[0]) == 20


@pytest.mark.parametrize("stability", [0, 1, 2])
def test_stable_and_confident_equals_transformers_criteria(stability):
    """The stopping rule with the engine's per-row history, step by step, on argmax canvases that settle."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import StableAndConfidentStoppingCriteria

    from unmask.engine.schedules import StableAndConfident

    g = torch.Generator().manual_seed(0)
    upstream = StableAndConfidentStoppingCriteria(stability, 2.5)
    rule = StableAndConfident(stability, 2.5)
    history = torch.full((3, stability, 5), -1)
    for step in range(6):
        argmax = torch.randint(0, 3, (3, 5), generator=g) if step < 3 else torch.ones(3, 5, dtype=torch.long)
        logits = torch.randn(3, 5, 7, generator=g) * (1 + step)
        entropy = torch.distributions.Categorical(logits=logits).entropy()
        assert torch.equal(rule.stop(history, argmax, entropy), upstream(argmax, logits))
        history = torch.cat([history, argmax[:, None]], 1)[:, 1:]


def test_a_padded_batch_equals_transformers_generate_while_every_row_is_generating(model):
    """Two left-padded rows without stopping or EOS run every step together, so the batch-shaped draws align too."""
    prompt = torch.tensor([[2, 10, 11, 12, 13, 3], [PAD, PAD, 2, 14, 15, 3]])
    mask = (prompt != PAD).long()
    stop_ids, model.stop_ids = model.stop_ids, ()
    try:
        want, want_forwards = reference(model, prompt, 24, 4, (None, None), eos=None, attention_mask=mask)
        out, forwards = ours(model, prompt, 24, 4, (None, None), attention_mask=mask)
    finally:
        model.stop_ids = stop_ids
    assert torch.equal(out.sequences[:, 6:], want)
    assert forwards == want_forwards == 12 and out.nfe.tolist() == [12, 12]


@pytest.mark.parametrize("spec", ["confidence", "threshold:0.5", "margin", "random", "eb:0"])
def test_heuristic_policies_decide_what_the_canvas_keeps(model, spec):
    policy = resolve_policy(spec, model)
    x = torch.cat([PROMPT.expand(2, -1), torch.full((2, 16), model.mask_id)], 1)
    out = generate(model, x, policy, SamplingConfig(steps=4), gen_start=6, generator=torch.Generator().manual_seed(0))
    generated = out.sequences[:, 6:]
    assert ((generated >= 0) & (generated < model.vocab_size)).all() and out.nfe.max() <= 8
    assert (out.order[generated != PAD] >= 0).all()


def test_learned_policies_run_on_the_canvas(model):
    """A UPO scorer (hidden features + top-K probabilities) and a Bernoulli acceptance policy, untrained."""
    from unmask.policies.learned import LearnedPolicy

    x = torch.cat([PROMPT.expand(2, -1), torch.full((2, 8), model.mask_id)], 1)
    for kind in ("upo", "bernoulli"):
        policy = LearnedPolicy.for_model(kind, model, d_model=16)
        out = generate(model, x, policy, SamplingConfig(steps=3), gen_start=6, record=True)
        assert out.trajectory and all(step.reveal.shape == (2, 8) for step in out.trajectory)
        assert out.nfe.tolist() == [3, 3] or (out.sequences[:, 6:] == PAD).any()


def test_bad_settings_get_one_clear_error(model, checkpoint):
    x = torch.cat([PROMPT, torch.full((1, 12), model.mask_id)], 1)
    eb = resolve_policy("eb:0.1", model)
    with pytest.raises(ValueError, match="multiple of 8"):
        generate(model, x, eb, SamplingConfig(steps=2), gen_start=6)
    x = torch.cat([PROMPT, torch.full((1, 8), model.mask_id)], 1)
    for settings, match in [
        ({"sampler": "llada"}, "diffusion_gemma sampler decodes uniform-state"),
        ({"cfg_scale": 1.0}, r"cfg_scale: option\(s\) of LLaDA generate\(\), .*diffusion_gemma sampler; drop them$"),
        ({"temperature": 0.5}, "temperature: option.*LLaDA generate.*Dream diffusion_generate.*LLaDA2 generate"),
        ({"block_length": 8}, "block_length: option.*LLaDA generate"),  # canvases are the blocks
        ({"cache": "prefix"}, "cannot serve cache mode 'prefix'.*encoder"),
        ({"t_min": 0.9}, "t_max"),
    ]:
        with pytest.raises(ValueError, match=match):
            generate(model, x, eb, SamplingConfig(**settings), gen_start=6)
    given = x.clone()
    given[0, 8] = 20
    with pytest.raises(ValueError, match="cannot fill in given tokens"):
        generate(model, given, eb, SamplingConfig(steps=2), gen_start=6)
    with pytest.raises(ValueError, match="no forward over a whole sequence"):
        model(x)
    with pytest.raises(ValueError, match="--native does not apply to DiffusionGemma"):
        load_model(f"hf:{checkpoint}", device="cpu", native=True)


def test_diffusion_gemma_options_are_refused_for_a_masked_model(tmp_path):
    llada = load_model(f"hf:{save_tiny(tmp_path / 'llada', 'llada')}", device="cpu")
    x = torch.cat([PROMPT, torch.full((1, 4), llada.mask_id)], 1)
    with pytest.raises(
        ValueError, match=r"t_max: option\(s\) of DiffusionGemma generate\(\), .*llada sampler; drop them$"
    ):
        generate(llada, x, resolve_policy("confidence", llada), SamplingConfig(t_max=0.9), gen_start=6)
    with pytest.raises(ValueError, match="does not decode"):
        generate(llada, x, resolve_policy("confidence", llada), SamplingConfig(sampler="diffusion_gemma"), gen_start=6)


@pytest.mark.slow
def test_the_gpu_recipes_train_upo_and_bernoulli_on_a_tiny_diffusion_gemma(tmp_path, capsys):
    """make-tiny, train-policy with recipes/gpu/*-diffusiongemma-gsm8k.yaml (UPO with its reward and Top-K reference;
    alpha-conditioned Bernoulli) at tiny sizes, and eval of both beside DiffusionGemma's own entropy bound."""
    import json
    from pathlib import Path

    from unmask.cli.main import main

    assert main(["make-tiny", "--output-dir", str(tmp_path / "tiny"), "--families", "diffusion_gemma"]) == 0
    model = f"hf:{tmp_path / 'tiny' / 'diffusion_gemma'}"
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"what is {a} + 2 ?", "answer": f"#### {a + 2}"}) + "\n" for a in range(4))
    )
    common = ["--model", model, "--task", "gsm8k", "--data", str(data), "--gen-length", "8", "--steps", "4"]
    recipes = Path(__file__).resolve().parents[2] / "recipes" / "gpu"
    small = [*common, "--eval-data", str(data), "--eval-size", "2", "--eval-steps", "1", "--num-generations", "2"]
    small += ["--prompts-per-step", "2", "--max-steps", "2", "--d-model", "16", "--num-iterations", "1"]
    for name in ("upo", "bernoulli"):  # the GPU recipes, at tiny sizes
        recipe = recipes / f"{name}-diffusiongemma-gsm8k.yaml"
        rc = main(["train-policy", "--config", str(recipe), *small, "--output-dir", str(tmp_path / name)])
        assert rc == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "upo" / "last" / "config.json").read_text())
    assert saved["mdm"] == model and saved["train"]["run"]["sampling"]["steps"] == 4
    report = tmp_path / "eval.json"
    policies = f"eb:0.1,{tmp_path / 'upo' / 'best'},{tmp_path / 'bernoulli' / 'best'}"
    assert main(["eval", *common, "--limit", "2", "--policies", policies, "--json", str(report)]) == 0, (
        capsys.readouterr().err
    )
    results = json.loads(report.read_text())["results"]
    assert len(results) == 3 and all(r["n"] == 2 and 0 < r["nfe"] <= 4 for r in results)


def test_a_policy_on_the_canvas_reads_the_canvas_steps_left_as_its_diffusion_time(model):
    """Every canvas position is a candidate each step, so the mask share is always 1: the time a policy reads
    (Jazbec's f_phi conditions on it) is the share of the canvas's step budget left, 1, 3/4, 1/2, 1/4 with 4 steps."""
    from unmask.engine.policy import Policy

    confidence = resolve_policy("confidence", model)
    times = []

    class Spy(Policy):
        capabilities = confidence.capabilities

        def select(self, state):
            assert state.masked.all()
            times.append(state.masked_fraction.tolist())
            return confidence.select(state)

    x = torch.cat([PROMPT.expand(2, -1), torch.full((2, 8), model.mask_id)], 1)
    generate(model, x, Spy(), SamplingConfig(steps=4), gen_start=6, generator=torch.Generator().manual_seed(0))
    assert times[:4] == [[1.0, 1.0], [0.75, 0.75], [0.5, 0.5], [0.25, 0.25]]
