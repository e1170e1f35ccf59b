"""Per-example randomness (issue 18 item 7): a stochastic decode gives every example the same result whatever
the batch size, the batch order or the process it runs in, because example j draws from its own stream
(seed, j) (unmask.engine.streams.ExampleStreams)."""

import pytest
import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.engine.streams import ExampleStreams
from unmask.evaluation.evaluate import run_policy
from unmask.policies import get_policy
from unmask.policies.learned import LearnedPolicy
from unmask.tasks import get_task


def _learned(kind, model):
    torch.manual_seed(0)
    if kind == "upo":
        policy = LearnedPolicy.for_model("upo", model, d_model=16, n_head=2)
    elif kind == "bernoulli":
        policy = LearnedPolicy.for_model("bernoulli", model, d_model=16)
    else:
        policy = LearnedPolicy.for_model("plackett-luce", model, d_model=16)
    policy = policy.with_options(mode="sample")
    return policy.eval()


STOCHASTIC = [
    ("random", {}),
    ("topk_softmax", {}),
    ("origin", {"steps": 6}),
    ("confidence:alg_temp=0.2", {}),
    ("confidence", {"temperature": 1.0}),
    ("threshold:0.6", {"temperature": 0.8}),
    ("eb:0.5", {"temperature": 0.8}),
    ("upo", {}),
    ("bernoulli", {}),
    ("plackett-luce", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("spec, sampling", STOCHASTIC, ids=[s for s, _ in STOCHASTIC])
def test_results_do_not_depend_on_batch_size(tiny_sudoku4_model, spec, sampling):
    task = get_task("sudoku4")
    examples = task.generate(28, seed=5, difficulty=7)
    policy = _learned(spec, tiny_sudoku4_model) if spec in ("upo", "bernoulli", "plackett-luce") else get_policy(spec)
    assert policy.capabilities.stochastic or sampling.get("temperature", 0) > 0
    config = SamplingConfig(**sampling)
    runs = []
    for batch_size in (64, 16, 7):
        sequences = []
        _, per = run_policy(
            task,
            tiny_sudoku4_model,
            examples,
            policy,
            config,
            batch_size=batch_size,
            seed=3,
            on_batch=lambda chunk, enc, out: sequences.append(out.sequences),
        )
        runs.append((torch.cat(sequences), per["nfe"].tolist()))
    for sequences, nfe in runs[1:]:
        assert torch.equal(sequences, runs[0][0]) and nfe == runs[0][1]


def test_batch_order_does_not_matter(tiny_sudoku4_model):
    task = get_task("sudoku4")
    enc = task.encode(task.generate(12, seed=1, difficulty=6), tiny_sudoku4_model)
    policy, config = get_policy("topk_softmax:k=3:temperature=0.5"), SamplingConfig(temperature=1.0)
    ids = list(range(100, 112))
    out = generate(tiny_sudoku4_model, enc.input_ids, policy, config, generator=ExampleStreams(7, ids))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    shuffled = generate(
        tiny_sudoku4_model,
        enc.input_ids[perm],
        policy,
        config,
        generator=ExampleStreams(7, [ids[i] for i in perm.tolist()]),
    )
    assert torch.equal(shuffled.sequences, out.sequences[perm]) and torch.equal(shuffled.nfe, out.nfe[perm])


def test_streams_are_distinct_per_example_and_checked(tiny_sudoku4_model):
    assert len({ExampleStreams.seed_of(0, i) for i in range(1000)} | {ExampleStreams.seed_of(1, 0)}) == 1001
    task = get_task("sudoku4")
    enc = task.encode(task.generate(3, seed=1, difficulty=6), tiny_sudoku4_model)
    with pytest.raises(ValueError, match="one example id per row"):
        generate(tiny_sudoku4_model, enc.input_ids, get_policy("random"), generator=ExampleStreams(0, [0, 1]))
    with pytest.raises(ValueError, match="must be >= 0"):
        ExampleStreams(-1, [0])


@pytest.mark.parametrize("streams", ["shared", "example"])
def test_a_steps_draws_shared_out_over_forwards_are_the_steps_draws(streams):
    """WindowDraws (a cached step's forwards, unmask.engine.cache): each part's positional draws are the step's own draws,
    drawn once over every row and position, sliced to the part's rows and positions, in every call order."""
    from unmask.engine.streams import SharedStream

    def make():
        return (
            SharedStream(torch.Generator().manual_seed(3)) if streams == "shared" else ExampleStreams(3, [0, 1, 2])
        ).bind(torch.arange(3), 2, 10, torch.device("cpu"))

    whole = make()
    want = [whole.uniform(5, dtype=torch.float64), whole.normal(5)]
    shares = make().windows()
    first, second = shares.part(torch.tensor([0, 2]), 4, 8), shares.part(torch.tensor([1]), 0, 10)
    got_second = second.uniform(5, dtype=torch.float64)
    assert torch.equal(first.uniform(5, dtype=torch.float64), want[0][[0, 2], 4:8])
    assert torch.equal(got_second, want[0][[1]])
    assert torch.equal(second.normal(5), want[1][[1]]) and torch.equal(first.normal(5), want[1][[0, 2], 4:8])
    assert torch.equal(shares.part(torch.arange(3), 0, 10).uniform(5, dtype=torch.float64), want[0])
    with pytest.raises(NotImplementedError, match="positional only"):
        first.uniform_rows(3)
