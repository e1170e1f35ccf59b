"""unmask reproduces the upstream samplers exactly: LLaDA generate(), Fast-dLLM threshold / factor decoding and
Dream diffusion_generate(), same tokens and same forwards per row (grid and oracles: conformance_cases.py)."""

import conformance_cases as cc
import pytest
import torch

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.policies import get_policy

pytestmark = pytest.mark.skipif(not cc.reference_available(), reason=f"reference code {cc.REFERENCE} is absent")


def _ids(cases):
    return [c.name for c in cases]


def _assert(case):
    same, detail = cc.check(case)
    assert same, f"{case.name}: {detail}"


def _suite(cases):
    """The settings the test suite runs: all of gen_length 16 and the gen_length-32 ones at steps G / 4 (the
    longest decodes); benchmarks/conformance.py runs the whole grid and records it."""
    return [c for c in cases if c.gen_length == 16 or c.steps == c.gen_length // 4]


LLADA = _suite(cc.grid("llada"))
FAST = _suite(cc.grid("fast_dllm"))
DREAM = _suite(cc.grid("dream"))
FAST_BATCH_1 = [c for c in FAST if c.batch == 1]


@pytest.mark.slow
@pytest.mark.parametrize("case", LLADA, ids=_ids(LLADA))
def test_llada_generate(case):
    _assert(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", FAST_BATCH_1, ids=_ids(FAST_BATCH_1))
def test_fast_dllm_threshold_and_factor(case):
    _assert(case)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [c for c in FAST if c.batch == 3 and c.temperature == 0],
    ids=_ids([c for c in FAST if c.batch == 3 and c.temperature == 0]),
)
def test_fast_dllm_rows_decoded_together_match_their_own_runs(case):
    same, detail = cc.batched_fast_dllm_matches(case)
    assert same, f"{case.name}: {detail}"


@pytest.mark.slow
@pytest.mark.parametrize("case", DREAM, ids=_ids(DREAM))
def test_dream_diffusion_generate(case):
    _assert(case)


@pytest.mark.parametrize("case", [LLADA[0], FAST_BATCH_1[1], DREAM[3], DREAM[-1]], ids=lambda c: c.name)
def test_conformance_smoke(case):
    """One setting per reference outside the slow marker, so the default run still checks parity."""
    _assert(case)


def test_grid_exercises_parallel_reveals_and_mask_predictions():
    """The oracle settings are not degenerate: Fast-dLLM reveals several tokens per step somewhere, and the
    network does predict [MASK] where it is allowed to (so bit-exact mode is really tested)."""
    case = next(c for c in FAST_BATCH_1 if c.strategy.startswith("threshold") and c.steps == c.gen_length)
    ids, attn = cc.prompts(1, 0)
    _, nfe = cc.run_reference(case, cc.network_for(case), ids, attn)
    assert nfe[0] < case.gen_length
    net = cc.network_for(LLADA[0])
    x = torch.full((1, 20), cc.MASK)
    assert (net.raw(x).argmax(-1) == cc.MASK).any()


def test_default_suppresses_the_mask_token_and_matches_when_the_model_never_predicts_it():
    """The one intended deviation: with the default (mask logit -inf) a network that never predicts [MASK] gives
    upstream's tokens; one that does gets real tokens where upstream would write [MASK]."""
    case = cc.Case("llada", 16, 8, 8, 0.0, 3, "low_confidence")
    ids, attn = cc.prompts(3, 0)
    x = torch.cat([ids, torch.full((3, 16), cc.MASK)], 1)
    am = torch.cat([attn, torch.ones(3, 16, dtype=torch.long)], 1)
    quiet = cc.OracleNet(mask_bias=-1e4)
    ref, _ = cc.run_reference(case, quiet, ids, attn)
    out = generate(
        cc.OracleMDM(quiet), x, get_policy("confidence"), SamplingConfig(steps=8, block_length=8), am, ids.shape[1]
    )
    assert torch.equal(out.sequences, ref)
    loud = cc.OracleNet(mask_bias=3.0)
    ref, _ = cc.run_reference(case, loud, ids, attn)
    out = generate(
        cc.OracleMDM(loud), x, get_policy("confidence"), SamplingConfig(steps=8, block_length=8), am, ids.shape[1]
    )
    assert (ref == cc.MASK).any() and not (out.sequences == cc.MASK).any()
