import math

import pytest
import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.models.base import MaskedDiffusionModel, MDMOutput
from unmask.policies import Policy, get_policy
from unmask.tasks import get_task


class PositionalMDM(MaskedDiffusionModel):
    """Deterministic fake MDM: predicts token (pos % 3) with confidence rising along the sequence."""

    def __init__(self, vocab: int = 5, mask_id: int = 4) -> None:
        super().__init__()
        self.vocab_size, self.mask_id, self.hidden_size, self.name = vocab, mask_id, 2, "positional"
        self.batch_sizes: list[int] = []

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        B, L = input_ids.shape
        self.batch_sizes.append(B)
        pos = torch.arange(L, dtype=torch.float32)
        logits = torch.zeros(B, L, self.vocab_size)
        logits[:, torch.arange(L), torch.arange(L) % 3] = 1.0 + pos / L
        hidden = torch.stack([pos, -pos], -1).expand(B, L, 2) if output_hidden_states else None
        return MDMOutput(logits=logits, hidden_states=hidden)


def masked_row(L, masked_positions, mask_id=4):
    row = torch.zeros(L, dtype=torch.long)
    row[list(masked_positions)] = mask_id
    return row


def test_one_token_per_step_fills_everything_and_keeps_prompt(tiny_sudoku4_model):
    task = get_task("sudoku4")
    examples = task.generate(6, seed=0, difficulty=7)
    enc = task.encode(examples, tiny_sudoku4_model)
    out = generate(tiny_sudoku4_model, enc.input_ids, get_policy("confidence"))
    assert (out.sequences != tiny_sudoku4_model.mask_id).all()
    given = enc.input_ids != tiny_sudoku4_model.mask_id
    assert torch.equal(out.sequences[given], enc.input_ids[given])
    assert out.nfe.tolist() == [9] * 6
    assert sorted(out.order[0][~given[0]].tolist()) == list(range(9))
    assert (out.order[given] == -1).all()


def test_confidence_matches_reference_loop(tiny_sudoku4_model):
    """Our engine with `confidence` equals a plain one-position-per-step max-confidence loop."""
    model = tiny_sudoku4_model
    task = get_task("sudoku4")
    examples = task.generate(5, seed=3, difficulty=6)
    x = task.encode(examples, model).input_ids
    ref = x.clone()
    for b in range(len(ref)):
        while (ref[b] == model.mask_id).any():
            logits = model(ref[b : b + 1]).logits[0]
            logits[:, model.mask_id] = -math.inf
            p, tok = logits.softmax(-1).max(-1)
            p[ref[b] != model.mask_id] = -1
            i = int(p.argmax())
            ref[b, i] = tok[i]
    out = generate(model, x, get_policy("confidence"))
    assert torch.equal(out.sequences, ref)


def test_llada_step_schedule_and_blocks():
    model = PositionalMDM()
    L, gen_start = 12, 4
    x = torch.stack([masked_row(L, range(4, 12)), masked_row(L, range(4, 12))])
    out = generate(
        model, x, get_policy("confidence"), SamplingConfig(steps=4, block_length=4), gen_start=gen_start, record=True
    )
    assert out.nfe.tolist() == [4, 4]
    # LLaDA get_num_transfer_tokens: 4 masks over 2 steps per block -> 2 + 2
    assert [int(r.reveal[0].sum()) for r in out.trajectory] == [2, 2, 2, 2]
    order = out.order[0]
    assert order[:4].max() < order[4:].min(), "block 0 must finish before block 1 starts"
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        generate(model, x, get_policy("confidence"), SamplingConfig(steps=3, block_length=4), gen_start=gen_start)


def test_uneven_schedule_front_loads_extra_tokens():
    model = PositionalMDM()
    x = masked_row(10, range(10))[None]
    out = generate(model, x, get_policy("left_to_right"), SamplingConfig(steps=4), record=True)
    assert [int(r.reveal.sum()) for r in out.trajectory] == [3, 3, 2, 2]


def test_finished_rows_leave_the_batch():
    model = PositionalMDM()
    x = torch.stack([masked_row(8, [1]), masked_row(8, [1, 2, 3]), masked_row(8, range(8))])
    out = generate(model, x, get_policy("confidence"))
    assert out.nfe.tolist() == [1, 3, 8]
    assert model.batch_sizes == [3, 2, 2] + [1] * 5


def test_threshold_reveals_several_per_step_and_at_least_one():
    model = PositionalMDM()
    x = masked_row(9, range(9))[None]
    out = generate(model, x, get_policy("threshold:0.3"), record=True)
    assert out.nfe.item() < 9
    out = generate(model, x, get_policy("threshold:1.0"))
    assert out.nfe.item() == 9


def test_temperature_sampling_is_seeded(tiny_sudoku4_model):
    task = get_task("sudoku4")
    x = task.encode(task.generate(8, seed=1, difficulty=5), tiny_sudoku4_model).input_ids
    cfg = SamplingConfig(temperature=1.0)
    runs = [
        generate(tiny_sudoku4_model, x, get_policy("random"), cfg, generator=torch.Generator().manual_seed(s)).sequences
        for s in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_policy_contract_is_enforced():
    class Lazy(Policy):
        name = "lazy"

        def select(self, state):
            return torch.zeros_like(state.candidates)

    with pytest.raises(RuntimeError, match="at least one"):
        generate(PositionalMDM(), masked_row(4, [0, 1])[None], Lazy())


def test_bad_shapes_are_rejected():
    model = PositionalMDM()
    with pytest.raises(ValueError, match="batch, length"):
        generate(model, torch.zeros(4, dtype=torch.long), get_policy("confidence"))
    with pytest.raises(ValueError, match="attention_mask shape"):
        generate(model, masked_row(4, [0])[None], get_policy("confidence"), attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match=r"steps \(--steps\) must be an integer >= 1"):
        SamplingConfig(steps=0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", float("inf"), "finite"),
        ("temperature", float("nan"), "finite"),
        ("temperature", -1.0, ">= 0"),
        ("cfg_scale", -0.5, ">= 0"),
        ("cfg_scale", float("inf"), "finite"),
        ("top_p", 0.0, "top_p"),
        ("top_p", 1.5, "top_p"),
        ("top_k", 0, "top_k"),
        ("eps", 0.0, "eps"),
        ("eps", float("nan"), "finite"),
    ],
)
def test_sampling_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{field: value})


def test_options_of_the_other_upstream_sampler_are_refused():
    model = PositionalMDM()  # logit_shift 0: decodes LLaDA-style
    x = masked_row(4, [0, 1])[None]
    for options in ({"top_p": 0.9}, {"top_k": 3}, {"eps": 0.01}, {"sampler": "llada", "top_p": 0.5}):
        with pytest.raises(ValueError, match="Dream diffusion_generate"):
            generate(model, x, get_policy("confidence"), SamplingConfig(steps=2, **options))
    for options in ({"block_length": 2}, {"cfg_scale": 1.0}, {"logits_eos_inf": True}):
        with pytest.raises(ValueError, match="LLaDA generate"):
            generate(model, x, get_policy("confidence"), SamplingConfig(steps=2, sampler="dream", **options))
    with pytest.raises(ValueError, match="needs steps"):
        generate(model, x, get_policy("confidence"), SamplingConfig(sampler="dream"))
    with pytest.raises(ValueError, match="eos_token_id is unknown"):
        generate(model, x, get_policy("confidence"), SamplingConfig(logits_eos_inf=True))


def test_zero_count_steps_still_cost_a_forward():
    """LLaDA's generate() runs every scheduled step, also those get_num_transfer_tokens gives 0 tokens."""
    model = PositionalMDM()
    out = generate(model, masked_row(6, [0, 1])[None], get_policy("confidence"), SamplingConfig(steps=5))
    assert out.nfe.tolist() == [5] and out.steps.tolist() == [5]
    out = generate(model, masked_row(6, [0, 1])[None], get_policy("threshold:0.9"), SamplingConfig(steps=5))
    assert out.nfe.tolist() == [2], "variable-count policies end when the block is clean"


def test_cfg_counts_two_forwards_per_step():
    model = PositionalMDM()
    x = masked_row(6, [3, 4, 5])[None]
    out = generate(model, x, get_policy("confidence"), SamplingConfig(steps=3, cfg_scale=1.0), gen_start=3)
    assert out.steps.tolist() == [3] and out.nfe.tolist() == [6]
    assert model.batch_sizes[-1] == 2, "conditional and unconditional rows run in one forward"


def test_a_stalling_model_ends_in_a_clear_error():
    class MaskLover(PositionalMDM):
        def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
            out = super().forward(input_ids, attention_mask, output_hidden_states)
            out.logits[..., self.mask_id] = 10.0
            return out

    x = masked_row(4, [0, 1])[None]
    with pytest.raises(ValueError, match="keeps predicting the mask token"):
        generate(MaskLover(), x, get_policy("threshold:0.9"), SamplingConfig(suppress_mask_token=False))
    out = generate(MaskLover(), x, get_policy("threshold:0.9"))  # the default suppresses [MASK]
    assert (out.sequences != 4).all()


def test_origin_needs_a_fixed_number_of_steps():
    x = masked_row(6, range(6))[None]
    with pytest.raises(ValueError, match="needs a fixed number of steps"):
        generate(PositionalMDM(), x, get_policy("origin"))
    out = generate(PositionalMDM(), x, get_policy("origin"), SamplingConfig(steps=3))
    assert out.nfe.tolist() == [3] and (out.sequences != 4).all()


def test_batch_is_bucketed_to_few_shapes():
    from unmask.engine.decode import bucket

    sizes = {bucket(b, 256) for b in range(1, 257)}
    assert len(sizes) <= 17 and all(bucket(b, 256) >= b for b in range(1, 257))
    assert max(bucket(b, 256) / b for b in range(1, 257)) <= 1.5
