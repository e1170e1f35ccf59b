"""Block key/value caches (unmask.engine.cache, issue 20): exact against Fast-dLLM's cached loops on tiny random LLaDA
configs, exact where the cache provably changes nothing, and never leaking across rows or calls."""

import pytest
import torch

from unmask.engine.cache import CACHES, CacheStrategy, DualCache, NoCache, PrefixCache
from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.models import MaskedTransformer, TransformerConfig, load_model
from unmask.policies import Capabilities, Policy, get_policy

MODES = ("prefix", "dual")


def text_model(n_layer: int = 2, length: int = 24, seed: int = 0) -> MaskedTransformer:
    """An untrained built-in MDM over a text-like layout (one coordinate: the position), its head scaled so that
    confidences spread over (0, 1) as a trained model's do."""
    torch.manual_seed(seed)
    config = TransformerConfig(
        vocab_size=12, mask_id=11, coordinates=[list(range(length))], n_layer=n_layer, n_head=2, n_embd=32
    )
    model = MaskedTransformer(config).eval()
    with torch.no_grad():
        model.head.weight.mul_(30)
    return model


def prompts(model, batch: int, gen_start: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.mask_id, (batch, model.config.seq_len), generator=g)
    x[:, gen_start:] = model.mask_id
    return x


@pytest.fixture(scope="module")
def fast_dllm():
    """Fast-dLLM's ``llada/generate.py`` (generate, generate_with_prefix_cache, generate_with_dual_cache)."""
    from conformance_cases import fast_dllm_reference, reference_available

    if not reference_available():
        pytest.skip("../shared/reference is absent")
    return fast_dllm_reference()


def native_pair(tmp_path, family: str, seed: int = 0, head_scale: float = 1.0):
    """(reference model, native MDM loaded from the official layout with the same weights). The tokenizer covers
    the whole vocabulary, so no logit is masked as undecodable (the reference masks none). ``head_scale`` > 1
    (LLaDA) scales the output head, the mask token's row zeroed so that no position's argmax is [MASK]: many
    confidences then lie within float32's resolution of 1."""
    import tiny_hf
    from reference_models import (
        MASK,
        reference_dream,
        reference_llada,
        save_official,
        tiny_dream_config,
        tiny_llada_config,
    )

    raw = tiny_llada_config() if family == "llada" else tiny_dream_config()
    ref = (reference_llada if family == "llada" else reference_dream)(raw, seed)
    if head_scale != 1.0:
        with torch.no_grad():
            ref.model.transformer.ff_out.weight.mul_(head_scale)
            ref.model.transformer.ff_out.weight[MASK] = 0
    tok = tiny_hf.tokenizer(mask=family == "dream", chat=True, extra_words=raw["vocab_size"] - len(tiny_hf.WORDS))
    path = save_official(ref, raw, tmp_path / f"{family}{seed}x{head_scale}", tokenizer=tok)
    return ref, load_model(f"hf:{path}", device="cpu")


class Guard(torch.nn.Module):
    """The reference model, stopped after ``limit`` forwards (Fast-dLLM's threshold loop never ends once the most
    confident position's argmax is [MASK])."""

    def __init__(self, model: torch.nn.Module, limit: int = 200) -> None:
        super().__init__()
        self.model, self.limit, self.calls = model, limit, 0

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.limit:
            raise TimeoutError("reference loop did not finish")
        return self.model(*args, **kwargs)


EXACT = {"suppress_mask_token": False, "confidence_float64": True, "refine_complete_block": True}  # bit-exact Fast-dLLM


def wasted_forwards(order: torch.Tensor, block_length: int) -> int:
    """Blocks revealed entirely at their first step: Fast-dLLM's cached loops run one more forward there (their
    ``while True`` refines before it checks), which reveals nothing; by default unmask moves on to the next block."""
    return sum(int((blk == blk.min()).all()) for blk in order[0].split(block_length))


def check_parity(fast_dllm, ref, mdm, seed, gen_length, block_length, spec, mode, **options):
    """unmask with ``options`` (default: the exact setting) against Fast-dLLM's cached loop: (tokens equal,
    Fast-dLLM's forwards, unmask's forwards, blocks its first step completed)."""
    threshold = None if spec == "confidence" else float(spec.split(":")[1])
    steps = gen_length // 2 if threshold is None else gen_length
    loop = {
        "none": fast_dllm.generate,
        "prefix": fast_dllm.generate_with_prefix_cache,
        "dual": fast_dllm.generate_with_dual_cache,
    }[mode]
    from reference_models import MASK

    prompt = torch.randint(6, 64, (1, 7), generator=torch.Generator().manual_seed(seed))
    want, want_nfe = loop(
        Guard(ref),
        prompt,
        steps=steps,
        gen_length=gen_length,
        block_length=block_length,
        temperature=0.0,
        mask_id=MASK,
        threshold=threshold,
    )
    x = torch.cat([prompt, torch.full((1, gen_length), MASK)], 1)
    sampling = SamplingConfig(steps=steps, block_length=block_length, cache=mode, **(options or EXACT))
    out = generate(mdm, x, get_policy(spec), sampling, gen_start=prompt.shape[1])
    return torch.equal(out.sequences, want), want_nfe, int(out.nfe[0]), wasted_forwards(out.order, block_length)


def test_fast_dllm_cached_loops_small(tmp_path, fast_dllm):
    ref, mdm = native_pair(tmp_path, "llada")
    for mode in MODES:
        for spec in ("confidence", "threshold:0.3"):
            equal, want_nfe, nfe, _ = check_parity(fast_dllm, ref, mdm, 0, 16, 4, spec, mode)
            assert equal and nfe == want_nfe, (mode, spec)


@pytest.mark.slow
def test_fast_dllm_cached_loops_grid(tmp_path, fast_dllm):
    """Same tokens and forwards as generate_with_prefix_cache / generate_with_dual_cache for confidence (count
    schedule) and threshold decoding at several block lengths, under the exact setting. By default
    (refine_complete_block off) unmask skips Fast-dLLM's refinement of a block its first step completed: exactly
    ``wasted_forwards`` fewer forwards, same tokens."""
    skipped = 0
    for seed in (0, 1):
        ref, mdm = native_pair(tmp_path, "llada", seed)
        for gen_length, block_length in ((32, 8), (32, 16), (16, 4)):
            for spec in ("confidence", "threshold:0.3", "threshold:0.1"):
                for mode in MODES:
                    equal, want_nfe, nfe, _ = check_parity(
                        fast_dllm, ref, mdm, seed, gen_length, block_length, spec, mode
                    )
                    assert equal and nfe == want_nfe, (seed, gen_length, block_length, spec, mode)
                    equal, want_nfe, nfe, wasted = check_parity(
                        fast_dllm,
                        ref,
                        mdm,
                        seed,
                        gen_length,
                        block_length,
                        spec,
                        mode,
                        suppress_mask_token=False,
                        confidence_float64=True,
                    )
                    assert equal and nfe + wasted == want_nfe
                    skipped += wasted
    assert skipped > 0  # the grid has blocks whose first step completes them (threshold:0.1)


@pytest.mark.parametrize("mode", ("none", *MODES))
def test_float32_confidence_ties_are_broken_as_fast_dllm_with_float64(tmp_path, fast_dllm, mode):
    """The divergence benchmarks/kv_cache.py saw (llada-mid, prompt 256, prefix) is no cache bug: Fast-dLLM's
    get_transfer_index softmaxes in float64, LLaDA's generate() (unmask's default) in the logits' dtype, and
    confidences within float32's resolution of 1 (~6e-8) then tie in float32 and the leftmost wins. A head scaled
    30x makes such ties common: the default tokens differ from Fast-dLLM's, cached or not; the exact setting
    (confidence_float64) reproduces them."""
    from reference_models import MASK

    ref, mdm = native_pair(tmp_path, "llada", head_scale=30.0)
    prompt = torch.randint(6, 64, (1, 7), generator=torch.Generator().manual_seed(0))
    logits = ref(input_ids=torch.cat([prompt, torch.full((1, 32), MASK)], 1)).logits[0, 7:15]  # block 0, step 0
    c32, c64 = logits.softmax(-1).max(-1).values, logits.double().softmax(-1).max(-1).values
    tied = (c32[:, None] == c32[None]) & (c64[:, None] != c64[None])
    assert tied.any() and ((c64[:, None] - c64[None]).abs()[tied] < 1e-6).all()  # first step: a genuine f32 tie
    equal, want_nfe, nfe, _ = check_parity(fast_dllm, ref, mdm, 0, 32, 8, "confidence", mode)
    assert equal and nfe == want_nfe
    equal, *_ = check_parity(fast_dllm, ref, mdm, 0, 32, 8, "confidence", mode, suppress_mask_token=False)
    assert not equal


def test_uncached_engine_matches_fast_dllm_uncached_loop(tmp_path, fast_dllm):
    """The baseline the cache is measured against is Fast-dLLM's own uncached ``generate`` (threshold rule)."""
    from reference_models import MASK

    ref, mdm = native_pair(tmp_path, "llada")
    prompt = torch.randint(6, 64, (1, 7), generator=torch.Generator().manual_seed(3))
    want, want_nfe = fast_dllm.generate(
        Guard(ref), prompt, steps=32, gen_length=32, block_length=8, temperature=0.0, mask_id=MASK, threshold=0.3
    )
    x = torch.cat([prompt, torch.full((1, 32), MASK)], 1)
    out = generate(
        mdm,
        x,
        get_policy("threshold:0.3"),
        SamplingConfig(steps=32, block_length=8, suppress_mask_token=False),
        gen_start=7,
    )
    assert torch.equal(out.sequences, want) and int(out.nfe[0]) == want_nfe
    assert int(out.positions_run[0]) == want_nfe * x.shape[1]


@pytest.mark.parametrize("family", ["builtin", "llada", "dream"])
@pytest.mark.parametrize("mode", MODES)
def test_cached_step_on_unchanged_input_equals_a_full_forward(tmp_path, family, mode):
    """Keys/values kept from a full forward, window recomputed: on the same input the cached outputs equal a
    full forward's everywhere (window fresh, the rest kept), with left padding and Dream's one-position shift."""
    if family == "builtin":
        model, gen_start, mask = text_model(), 8, None
        x = prompts(model, 2, gen_start)
    else:
        _, model = native_pair(tmp_path, family)
        gen_start = 8
        x = torch.randint(6, 60, (2, 24), generator=torch.Generator().manual_seed(1))
        x[:, gen_start:] = model.mask_id
        mask = torch.ones_like(x)
        mask[1, :3] = 0
    full = model(x, mask, output_hidden_states=True)
    rows = torch.arange(2)
    cache = CACHES[mode]()
    cache.prepare(model, 2, gen_start, 4)
    length = x.shape[1] - gen_start

    def step(first: bool):
        windows, positions = cache.forward(x, mask, rows, blocks, torch.full((2,), first), True)
        values = [{"logits": w.logits, "hidden": w.hidden} for w in windows]
        return windows, cache.assemble(rows, windows, values), positions

    for block in (0, 1, 3):
        blocks = torch.full((2,), block)
        step(True)
        (window,), out, positions = step(False)
        lo, hi = 4 * block, length if mode == "prefix" else 4 * (block + 1)
        assert (window.lo, window.hi, window.full) == (lo, hi, False) and window.logits.shape[1] == hi - lo
        torch.testing.assert_close(out["logits"], full.logits[:, gen_start:], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["hidden"], full.hidden_states[:, gen_start:], rtol=1e-5, atol=1e-5)
        start = gen_start + 4 * block - (model.logit_shift if block or gen_start else 0)
        assert positions.tolist() == [gen_start + hi - start] * 2


@pytest.mark.parametrize("mode", MODES)
def test_one_layer_model_cache_is_exact_for_heuristics(mode):
    """With one layer a position's keys depend on its own token only, and the tokens outside the current block do
    not change while it decodes: the cache is then exact, so every heuristic gives the uncached tokens."""
    model = text_model(n_layer=1)
    x = prompts(model, 5, 8)
    for spec in ("confidence", "margin", "entropy", "threshold:0.7", "left_to_right", "random"):
        runs = [
            generate(
                model,
                x,
                get_policy(spec),
                SamplingConfig(block_length=4, cache=c),
                gen_start=8,
                generator=torch.Generator().manual_seed(0),
            )
            for c in ("none", mode)
        ]
        assert torch.equal(runs[0].sequences, runs[1].sequences), spec
        assert torch.equal(runs[0].nfe, runs[1].nfe)
        assert (runs[1].positions_run < runs[0].positions_run).all()


def test_one_block_over_the_whole_sequence_changes_nothing():
    """Full diffusion with no prompt (gen_start 0, one block): every step's window is the whole sequence."""
    model = text_model()
    x = prompts(model, 3, 0)
    runs = [generate(model, x, get_policy("threshold:0.7"), SamplingConfig(cache=c)) for c in ("none", *MODES)]
    for run in runs[1:]:
        assert torch.equal(run.sequences, runs[0].sequences) and torch.equal(run.nfe, runs[0].nfe)
        assert torch.equal(run.positions_run, runs[0].positions_run)
    assert torch.equal(runs[0].positions_run, runs[0].nfe * x.shape[1])


def test_positions_run_counts_the_windows():
    """Dual: the whole sequence at each block's first step, the block at the others; prefix: block to the end."""
    model, gen_start, block_length = text_model(), 8, 4
    x = prompts(model, 2, gen_start)
    L, steps = x.shape[1], 8  # 4 blocks, 2 steps each
    for mode in MODES:
        out = generate(
            model,
            x,
            get_policy("confidence"),
            SamplingConfig(steps=steps, block_length=block_length, cache=mode),
            gen_start=gen_start,
        )
        starts = [gen_start + j * block_length for j in range(4)]
        later = [block_length if mode == "dual" else L - s for s in starts]
        assert out.nfe.tolist() == [steps] * 2
        assert out.positions_run.tolist() == [sum(L + w for w in later)] * 2


def test_refine_complete_block_adds_fast_dllms_empty_forward():
    """A threshold so low that every block's first step reveals it whole: with refine_complete_block each block
    costs one more cached forward (its window's positions), tokens unchanged; without a cache nothing changes."""
    model, gen_start, block_length = text_model(), 8, 4
    x = prompts(model, 2, gen_start)
    L, blocks = x.shape[1], (x.shape[1] - gen_start) // block_length
    for mode in ("none", *MODES):
        configs = [
            SamplingConfig(block_length=block_length, cache=mode, refine_complete_block=r) for r in (False, True)
        ]
        runs = [generate(model, x, get_policy("threshold:1e-9"), c, gen_start=gen_start) for c in configs]
        assert torch.equal(runs[0].sequences, runs[1].sequences) and torch.equal(runs[0].steps, runs[1].steps)
        assert runs[0].nfe.tolist() == [blocks] * 2
        extra = 0 if mode == "none" else blocks
        windows = (
            0
            if mode == "none"
            else sum(block_length if mode == "dual" else L - gen_start - j * block_length for j in range(blocks))
        )
        assert (runs[1].nfe - runs[0].nfe).tolist() == [extra] * 2
        assert (runs[1].positions_run - runs[0].positions_run).tolist() == [windows] * 2


@pytest.mark.parametrize("mode", MODES)
def test_no_leak_across_rows_or_calls(mode, monkeypatch):
    """A row decodes the same in a batch (rows in different blocks at the same step, forwards padded to a bucket
    size) as alone, and a call is not affected by the call before it."""
    import unmask.engine.decode

    sizes, bucket = [], unmask.engine.decode.bucket
    monkeypatch.setattr(
        unmask.engine.decode, "bucket", lambda b, batch_size: sizes.append((b, bucket(b, batch_size))) or sizes[-1][1]
    )
    model = text_model()
    x = prompts(model, 8, 8, seed=5)
    sampling = SamplingConfig(block_length=4, cache=mode)
    policy = get_policy("threshold:0.7")
    batch = generate(model, x, policy, sampling, gen_start=8)
    assert len(set(batch.nfe.tolist())) > 1  # rows desynchronise, so steps mix blocks
    assert any(b < size for b, size in sizes)  # some forwards ran padded rows
    for r in range(len(x)):
        alone = generate(model, x[r : r + 1], policy, sampling, gen_start=8)
        assert torch.equal(alone.sequences[0], batch.sequences[r])
        assert alone.nfe[0] == batch.nfe[r] and alone.positions_run[0] == batch.positions_run[r]
    generate(model, prompts(model, 8, 8, seed=2), policy, sampling, gen_start=8)
    again = generate(model, x, policy, sampling, gen_start=8)
    assert torch.equal(again.sequences, batch.sequences)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_left_padding_is_honoured_under_the_cache(tmp_path, family):
    """Native backends: a left-padded row decodes as it does alone (position ids over real tokens; Dream's shift
    realigned inside the window), with blocks (LLaDA sampler) and with one block after a prompt."""
    _, model = native_pair(tmp_path, family)
    lengths, gen = (5, 9), 12
    rows = [torch.randint(6, 60, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    L = max(lengths) + gen
    x = torch.full((2, L), model.pad_id)
    mask = torch.zeros(2, L, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, max(lengths) - len(r) : max(lengths)] = r
        mask[i, max(lengths) - len(r) :] = 1
    x[:, max(lengths) :] = model.mask_id
    options = [{"sampler": "llada", "steps": 12, "block_length": 4}, {"steps": 12}]
    for mode in MODES:
        for extra in options:
            sampling = SamplingConfig(cache=mode, **extra)
            batch = generate(model, x, get_policy("confidence"), sampling, mask, gen_start=max(lengths))
            for i, r in enumerate(rows):
                alone = torch.cat([r, torch.full((gen,), model.mask_id)])[None]
                out = generate(model, alone, get_policy("confidence"), sampling, gen_start=len(r))
                assert torch.equal(out.sequences[0, len(r) :], batch.sequences[i, max(lengths) :]), (mode, extra)


class Recorder(Policy):
    """Reveals the most confident candidate and keeps what it saw (hidden features and probabilities)."""

    name = "recorder"
    capabilities = Capabilities(needs_hidden=True)

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def act(self, state, record=False):
        self.seen.append(
            (
                state.hidden.clone(),
                state.probs.clone(),
                state.candidates.clone(),
                state.tokens.clone(),
                state.confidence.clone(),
            )
        )
        score = state.confidence.masked_fill(~state.candidates, -1.0)
        return torch.nn.functional.one_hot(score.argmax(1), score.shape[1]).bool(), {}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_positions_outside_the_window_show_the_blocks_first_step(temperature):
    """What a learned policy reads outside the window under the dual cache: the features, probabilities, tokens
    and confidences of the block's first (full) step (at temperature > 0 its draws too: the sampler runs on the
    window only); inside the window: this step's."""
    model, gen_start = text_model(), 8
    x = prompts(model, 1, gen_start)
    policy = Recorder()
    generate(
        model,
        x,
        policy,
        SamplingConfig(steps=16, block_length=4, cache="dual", temperature=temperature),
        gen_start=gen_start,
        generator=torch.Generator().manual_seed(0),
    )
    for block in range(4):
        first, later = policy.seen[4 * block], policy.seen[4 * block + 1 : 4 * block + 4]
        inside = torch.zeros(16, dtype=torch.bool)
        inside[4 * block : 4 * block + 4] = True
        for hidden, probs, candidates, tokens, confidence in later:
            assert (candidates[0] <= inside).all()
            torch.testing.assert_close(hidden[0, ~inside], first[0][0, ~inside])
            torch.testing.assert_close(probs[0, ~inside], first[1][0, ~inside])
            assert torch.equal(tokens[0, ~inside], first[3][0, ~inside])
            assert torch.equal(confidence[0, ~inside], first[4][0, ~inside])
            assert not torch.allclose(hidden[0, inside], first[0][0, inside])


class WindowSpy:
    """A token sampler that records the shape of the logits each ``prepare`` call gets."""

    def __init__(self, sampler) -> None:
        self.sampler, self.shapes = sampler, []

    def prepare(self, logits, draws):
        self.shapes.append(tuple(logits.shape[:2]))
        return self.sampler.prepare(logits, draws)

    def choose(self, probs, draws, **kwargs):
        return self.sampler.choose(probs, draws, **kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_the_sampler_runs_on_each_forwards_window_only(mode, monkeypatch):
    """The token sampler's per-position work runs on the positions a forward gave fresh outputs for: the whole
    generation region at a block's first step, the block (dual) or the block onwards (prefix) at the others, and
    once per forward when the rows of a step sit in different blocks."""
    model, gen_start, block_length = text_model(), 8, 4
    x = prompts(model, 1, gen_start)
    spies, original = [], SamplingConfig.build

    def build(self, model):
        schedule, sampler = original(self, model)
        spies.append(WindowSpy(sampler))
        return schedule, spies[-1]

    monkeypatch.setattr(SamplingConfig, "build", build)
    generate(
        model,
        x,
        get_policy("confidence"),
        SamplingConfig(steps=8, block_length=block_length, cache=mode),
        gen_start=gen_start,
    )
    windows = [
        16 if step % 2 == 0 else (block_length if mode == "dual" else 16 - block_length * (step // 2))
        for step in range(8)
    ]
    assert spies[0].shapes == [(1, w) for w in windows]
    batch = prompts(model, 4, gen_start, seed=2)
    generate(
        model,
        batch,
        get_policy("threshold:0.7"),
        SamplingConfig(block_length=block_length, cache=mode),
        gen_start=gen_start,
    )
    sizes = [rows for rows, _ in spies[1].shapes]
    assert max(sizes) == 4 and min(sizes) < 4  # rows in different blocks: one sampler call per forward


def test_shipped_learned_policies_decode_under_the_cache():
    """Learned policies (UPO scores, Bernoulli parallel) run under both caches on their built-in model."""
    from unmask.api import resolve_policy
    from unmask.tasks import get_task

    model = load_model("arithmetic-carry", device="cpu")
    task = get_task("arithmetic", max_digits=16, propagate=0.8)
    enc = task.encode(task.generate(8, seed=0), model)
    for spec in ("upo", "bernoulli"):
        policy = resolve_policy(spec, model)
        for mode in MODES:
            out = generate(
                model,
                enc.input_ids,
                policy,
                SamplingConfig(block_length=4, cache=mode),
                gen_start=enc.gen_start,
                generator=torch.Generator().manual_seed(0),
            )
            assert (out.sequences != model.mask_id).all()
            assert (out.positions_run < out.nfe * enc.input_ids.shape[1]).all()


def test_bad_cache_modes_name_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="none, prefix, dual"):
        SamplingConfig(cache="full")
    import tiny_hf

    bert = load_model(f"hf:{tiny_hf.save_bert(tmp_path / 'bert')}", device="cpu")
    x = torch.full((1, 6), bert.mask_id)
    with pytest.raises(ValueError, match=r"cannot serve cache mode 'dual'.*modes it can use: none$"):
        generate(bert, x, get_policy("confidence"), SamplingConfig(cache="dual"))


def test_float64_confidence_is_the_full_float64_softmax_bit_for_bit():
    """Fast-dLLM's confidences (softmax of the float64 logits at the chosen token), computed a few positions at a
    time: the same values as one softmax over the whole (b, L, V) tensor, across chunk boundaries."""
    from unmask.engine.tokens import float64_confidence

    logits = torch.randn(3, 45, 97, generator=torch.Generator().manual_seed(0)) * 4
    tokens = torch.randint(0, 97, (3, 45), generator=torch.Generator().manual_seed(1))
    want = logits.double().softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    for chunk in (1, 7, 32, 1000):
        assert torch.equal(float64_confidence(logits, tokens, chunk), want)


@pytest.mark.parametrize("rows", [None, torch.tensor([2, 0])])
def test_a_cached_step_writes_only_its_window_into_the_kept_keys(rows):
    """A later step writes its window's fresh keys/values over the kept ones (Fast-dLLM replace_position) and leaves
    every other position, and every other row, as the block's first step kept them."""
    model, gen_start = text_model(), 8
    x = prompts(model, 3, gen_start)
    cache = DualCache()
    cache.prepare(model, 3, gen_start, 4)
    every = torch.arange(3)
    cache.forward(x, None, every, torch.full((3,), 1), torch.ones(3, dtype=torch.bool), False)
    kept = {layer: k.clone() for layer, k in cache.store.keys.items()}
    changed = x.clone()
    changed[:, 12:14] = 3  # two positions of block 1 revealed
    group = every if rows is None else rows
    cache.forward(
        changed[group], None, group, torch.full((len(group),), 1), torch.zeros(len(group), dtype=torch.bool), False
    )
    for layer, k in cache.store.keys.items():
        outside = torch.ones(x.shape[1], dtype=torch.bool)
        outside[12:16] = False
        assert torch.equal(k[:, :, outside], kept[layer][:, :, outside])
        untouched = [r for r in range(3) if r not in group.tolist()]
        assert torch.equal(k[untouched], kept[layer][untouched])
        assert not torch.equal(k[group][:, :, ~outside], kept[layer][group][:, :, ~outside])  # fresh in the window


REFRESH_POLICIES = ("confidence", "threshold:0.7", "eb:0.1", "factor:1", "random")


@pytest.mark.parametrize("mode", MODES)
def test_cache_refresh_zero_refreshes_every_step_and_gives_the_uncached_tokens(mode):
    """cache_refresh 0: every step runs the full sequence and refreshes the kept keys/values, so tokens, NFE and
    steps are --cache none's (which the cache alone does not give: eb's tokens differ), and every step runs all L
    positions."""
    model = text_model()
    x = prompts(model, 4, 8, seed=1)
    differs = []
    for spec in REFRESH_POLICIES:
        none, cached, refreshed = [
            generate(
                model,
                x,
                get_policy(spec),
                SamplingConfig(block_length=4, **options),
                gen_start=8,
                generator=torch.Generator().manual_seed(0),
            )
            for options in ({"cache": "none"}, {"cache": mode}, {"cache": mode, "cache_refresh": 0.0})
        ]
        assert torch.equal(none.sequences, refreshed.sequences), spec
        assert torch.equal(none.nfe, refreshed.nfe) and torch.equal(none.steps, refreshed.steps)
        assert torch.equal(refreshed.positions_run, refreshed.nfe * x.shape[1])
        differs.append(not torch.equal(none.sequences, cached.sequences))
    assert any(differs)


def full_steps(order: torch.Tensor, block_length: int, share: float) -> list[tuple[bool, int]]:
    """(runs the full sequence, block) of each step of one row, from its reveal order (B's row of
    ``GenerationOutput.order``) alone: a block's first step, or the step after one that revealed at least ``share``
    of the block's masked positions (cache_refresh)."""
    blocks = torch.arange(len(order)) // block_length
    block = [int(blocks[order == s][0]) for s in range(int(order.max()) + 1)]
    steps = []
    for s, b in enumerate(block):
        full = s == 0 or b != block[s - 1]
        if not full:
            in_block = blocks == b
            full = int((order[in_block] == s - 1).sum()) / int((order[in_block] >= s - 1).sum()) >= share
        steps.append((full, b))
    return steps


@pytest.mark.parametrize("mode", MODES)
def test_cache_refresh_runs_full_after_steps_that_reveal_the_share(mode):
    """positions_run counts L for each full step (block starts and refreshes) and the window for the others; the
    refreshes follow exactly the steps that revealed at least the share of their block's masked positions. A
    share of 1 only follows steps that complete the block: nothing is refreshed, the run equals Fast-dLLM's rule."""
    model, gen_start, block_length = text_model(), 8, 4
    x = prompts(model, 4, gen_start, seed=3)
    L = x.shape[1]
    refreshes = 0
    for spec in ("threshold:0.7", "eb:0.1"):

        def run(share):
            sampling = SamplingConfig(block_length=block_length, cache=mode, cache_refresh=share)
            return generate(model, x, get_policy(spec), sampling, gen_start=gen_start)

        base, high, out = run(None), run(1.0), run(0.5)
        assert torch.equal(high.sequences, base.sequences) and torch.equal(high.positions_run, base.positions_run)
        for r in range(len(x)):
            steps = full_steps(out.order[r], block_length, 0.5)
            window = [
                L if full else block_length if mode == "dual" else L - gen_start - b * block_length for full, b in steps
            ]
            assert int(out.nfe[r]) == len(steps) and int(out.positions_run[r]) == sum(window), (spec, r)
            refreshes += sum(full for full, _ in steps) - len({b for _, b in steps})
    assert refreshes > 0


def test_cache_refresh_bad_values_are_refused():
    for value in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"cache_refresh \(--cache-refresh\) must be a number in \[0, 1\] or none"):
            SamplingConfig(cache="dual", cache_refresh=value)
    with pytest.raises(ValueError, match="--cache none keeps none; use --cache prefix or --cache dual"):
        SamplingConfig(cache_refresh=0.5)


def test_an_injected_cache_strategy_runs_the_decode_and_reports_its_memory():
    """generate(..., cache=) runs the forwards through the given strategy (the tokens of the one the config names)
    and leaves it to be read: what it held (``nbytes``), nothing for ``none``; a reused instance starts afresh."""

    class Counted(DualCache):
        forwards = 0

        def forward(self, *args, **kwargs):
            Counted.forwards += 1
            return super().forward(*args, **kwargs)

    model, gen_start = text_model(), 8
    x = prompts(model, 3, gen_start)
    sampling = SamplingConfig(block_length=4, cache="dual")
    built = generate(model, x, get_policy("threshold:0.7"), sampling, gen_start=gen_start)
    cache = Counted()
    for _ in range(2):
        out = generate(model, x, get_policy("threshold:0.7"), sampling, gen_start=gen_start, cache=cache)
        assert torch.equal(out.sequences, built.sequences) and torch.equal(out.nfe, built.nfe)
    assert Counted.forwards == 2 * int(built.steps.max())
    vocab, L, layers = model.config.vocab_size, x.shape[1], model.config.n_layer
    keys = 2 * layers * 3 * L * model.config.n_embd * 4  # keys and values of every layer, float32
    assert cache.nbytes() >= keys + 3 * (L - gen_start) * vocab * 4  # and at least the first step's probabilities
    none = NoCache()
    generate(model, x, get_policy("threshold:0.7"), SamplingConfig(block_length=4), gen_start=gen_start, cache=none)
    assert none.nbytes() == 0


def test_the_cache_registry_names_one_strategy_per_mode():
    assert {mode: cls.mode for mode, cls in CACHES.items()} == {
        m: m for m in ("none", "prefix", "dual", "block", "encoder")
    }
    assert all(issubclass(cls, CacheStrategy) for cls in CACHES.values())
    assert (PrefixCache.suffix, DualCache.suffix) == (False, True)  # one mechanism: they differ in the window end


def test_a_strategy_the_config_or_the_model_does_not_serve_is_one_clear_error(tmp_path):
    model = text_model()
    x = prompts(model, 1, 8)
    with pytest.raises(ValueError, match=r"serves cache mode 'prefix', but the sampling config says cache='dual'"):
        generate(
            model,
            x,
            get_policy("confidence"),
            SamplingConfig(block_length=4, cache="dual"),
            gen_start=8,
            cache=PrefixCache(),
        )
    import tiny_hf

    bert = load_model(f"hf:{tiny_hf.save_bert(tmp_path / 'bert')}", device="cpu")
    with pytest.raises(ValueError, match=r"cannot serve cache mode 'prefix'.*modes it can use: none$"):
        generate(
            bert,
            torch.full((1, 6), bert.mask_id),
            get_policy("confidence"),
            SamplingConfig(cache="prefix"),
            cache=PrefixCache(),
        )
