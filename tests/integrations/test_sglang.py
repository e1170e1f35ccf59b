"""unmask policies as an SGLang dLLM algorithm: the adapter against SGLang's own algorithms (their real code, from the
pinned wheel, on a CPU) and against unmask's engine; registration, its interface checks and the refusals."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import torch
from sglang_harness import load_algorithms, reveal_steps, serve, unload

from unmask.core.config import ConfigError
from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.integrations.sglang import shim
from unmask.integrations.sglang.hook import BlockPolicy, ServedPolicyConfig
from unmask.models import MaskedTransformer, TransformerConfig
from unmask.policies import get_policy
from unmask.policies.learned import LearnedPolicy
from unmask.policies.resolve import resolve_policy

ROOT = Path(__file__).resolve().parents[2]
BLOCK, BLOCKS, PROMPT, BATCH = 8, 3, 8, 4
THRESHOLD, GAMMA = 0.7, 0.5


def installed_sglang() -> Path | None:
    spec = importlib.util.find_spec("sglang")
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


SGLANG = installed_sglang()  # the wheel's package folder, found before any test loads it
WHEEL = pytest.mark.skipif(
    SGLANG is None,
    reason=f"SGLang's wheel is absent: pip install --no-deps sglang=={shim.TESTED} (the README's test command does)",
)


def tiny_mdm(length: int) -> MaskedTransformer:
    """A random bidirectional MDM (vocabulary 24, mask 23) whose sharp output layer gives confidences from ~0.1 to
    ~1, so thresholds bite."""
    torch.manual_seed(0)
    m = MaskedTransformer(TransformerConfig(24, 23, [list(range(length))], 1, 2, 32))
    torch.nn.init.normal_(m.head.weight, std=0.6)
    return m.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model():
    return tiny_mdm(PROMPT + BLOCKS * BLOCK)


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, 23, (BATCH, PROMPT), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def sglang():
    """SGLang's algorithm package (the installed wheel's real code; serving-stack imports stubbed)."""
    if SGLANG is None:
        pytest.skip(f"SGLang's wheel is absent: pip install --no-deps sglang=={shim.TESTED}")
    package = load_algorithms(SGLANG)
    from sglang.srt.dllm.config import DllmConfig

    from unmask.integrations.sglang.algorithm import UnmaskPolicy

    def make(name: str, settings: dict, fdfo: bool = False):
        cls = UnmaskPolicy if name == "UnmaskPolicy" else package.algo_name_to_cls[name]
        return cls(DllmConfig(name, settings, BLOCK, 23, BATCH, first_done_first_out_mode=fdfo))

    make.names = set(package.algo_name_to_cls)
    yield make
    unload()


UPSTREAM = {  # SGLang's algorithm and settings -> the unmask policy that decides the same
    "low_confidence": ("LowConfidence", {"threshold": THRESHOLD}, f"threshold:{THRESHOLD}", False),
    "low_confidence_top1": ("LowConfidence", {"threshold": 1.0}, "confidence", False),  # never above 1: top-1
    "joint_threshold": (
        "JointThreshold",
        {"threshold": THRESHOLD, "edit_threshold": 1.0, "max_post_edit_steps": 0},  # no token-to-token edits
        f"threshold:{THRESHOLD}",
        False,
    ),
    "joint_threshold_vectorized": (
        "JointThreshold",
        {"threshold": THRESHOLD, "edit_threshold": 1.0, "max_post_edit_steps": 0, "vectorized_decoding": True},
        f"threshold:{THRESHOLD}",
        False,
    ),
    "eb_sampling": ("EBSampling", {"gamma": GAMMA}, f"eb:{GAMMA}", True),  # EBSampling bars the mask token too
}


@WHEEL
@pytest.mark.parametrize("fdfo", [False, True], ids=["sync", "fdfo"])
@pytest.mark.parametrize("case", list(UPSTREAM))
def test_adapter_commits_what_sglangs_algorithm_commits(sglang, model, prompt, case, fdfo):
    """SGLang's own class and the adapter wrapping the matching unmask policy, run by SGLang's own loop on the same
    model: the same block at every forward (the same tokens committed at the same steps, as many forwards)."""
    name, settings, spec, suppress = UPSTREAM[case]
    if name not in sglang.names:
        pytest.skip(f"{name} is not in SGLang {shim.TESTED} (it is on SGLang's main branch, in no release yet)")
    theirs, seen_theirs = serve(sglang(name, settings, fdfo), model, prompt, BLOCKS, BLOCK, fdfo)
    adapter = sglang("UnmaskPolicy", {"policy": spec, "suppress_mask_token": suppress}, fdfo)
    ours, seen_ours = serve(adapter, model, prompt, BLOCKS, BLOCK, fdfo)
    assert torch.equal(ours, theirs)
    assert [len(s) for s in seen_ours] == [len(s) for s in seen_theirs]
    assert all(torch.equal(a, b) for s, t in zip(seen_ours, seen_theirs) for a, b in zip(s, t))
    order, steps = reveal_steps(seen_ours, model.mask_id)
    per_step = [int((order[r] == s).sum()) for r in range(BATCH) for s in range(int(steps[r]))]
    assert max(per_step) > 1 if spec != "confidence" else max(per_step) == 1  # the rule, not top-1 by accident


@WHEEL
@pytest.mark.parametrize(
    "spec", [f"threshold:{THRESHOLD}", "confidence", f"eb:{GAMMA}", "margin", "pc_sampler", f"dus:block_length={BLOCK}"]
)
def test_engine_agrees_with_the_served_policy(sglang, model, prompt, spec):
    """unmask's engine (``block_length`` = SGLang's block) on the same prompts: the same tokens, each revealed at
    the same step, and one forward per step where SGLang runs one more per block (the forward that sees it clean)."""
    canvas, seen = serve(sglang("UnmaskPolicy", {"policy": spec}), model, prompt, BLOCKS, BLOCK)
    order, steps = reveal_steps(seen, model.mask_id)
    out = generate(model, masked_answer(prompt), get_policy(spec), SamplingConfig(block_length=BLOCK), gen_start=PROMPT)
    assert torch.equal(out.sequences, canvas)
    assert torch.equal(out.order, order)
    assert torch.equal(out.nfe, steps)
    assert [len(s) for s in seen] == [most_steps(out.order, k) + 1 for k in range(BLOCKS)]


def masked_answer(prompt: torch.Tensor, blocks: int = BLOCKS) -> torch.Tensor:
    return torch.cat([prompt, torch.full((len(prompt), blocks * BLOCK), 23)], 1)


def most_steps(order: torch.Tensor, k: int) -> int:
    """The most steps a request spent on block ``k`` (each step reveals at least one position there): SGLang's
    synchronous loop runs until every request's block is done."""
    return max(len(row.unique()) for row in order[:, k * BLOCK : (k + 1) * BLOCK])


@WHEEL
@pytest.mark.parametrize("steps", [3, 12])
def test_count_schedule_per_block_matches_the_engine(sglang, model, prompt, steps):
    """``steps`` per block: a count policy reveals LLaDA's get_num_transfer_tokens share each step (none in some
    when steps > the block's masks), as the engine with steps per block x blocks; SGLang runs each block's scheduled
    steps and one more forward (beyond its default limit of block_size + 1 when steps > block_size)."""
    served = sglang("UnmaskPolicy", {"policy": "margin", "steps": steps})
    canvas, seen = serve(served, model, prompt, BLOCKS, BLOCK)
    config = SamplingConfig(steps=steps * BLOCKS, block_length=BLOCK)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # steps > masked positions: the engine says so
        out = generate(model, masked_answer(prompt), get_policy("margin"), config, gen_start=PROMPT)
    order, taken = reveal_steps(seen, model.mask_id, steps)
    assert torch.equal(out.sequences, canvas) and torch.equal(out.order, order) and torch.equal(out.nfe, taken)
    assert [len(s) for s in seen] == [steps + 1] * BLOCKS


@WHEEL
def test_a_learned_policy_serves_through_the_same_adapter(sglang, tmp_path):
    """A fresh Bernoulli parallel policy (Jazbec §3.2) from a checkpoint directory: greedy, it decides as in unmask's
    engine (one block: the region its network attends over in both); sampling, it fills the block, prompt intact."""
    model = tiny_mdm(PROMPT + BLOCK)
    prompt = torch.randint(0, 23, (BATCH, PROMPT), generator=torch.Generator().manual_seed(2))
    LearnedPolicy.for_model("bernoulli", model, base_threshold=0.5).save(tmp_path / "bernoulli")
    spec = f"{tmp_path / 'bernoulli'}:mode=greedy"
    canvas, seen = serve(sglang("UnmaskPolicy", {"policy": spec, "model": model.name}), model, prompt, 1, BLOCK)
    config = SamplingConfig(block_length=BLOCK)
    out = generate(model, masked_answer(prompt, 1), resolve_policy(spec, model), config, gen_start=PROMPT)
    order, steps = reveal_steps(seen, model.mask_id)
    assert torch.equal(out.sequences, canvas) and torch.equal(out.order, order)
    assert int(steps.max()) < BLOCK  # several positions in some step
    served = sglang("UnmaskPolicy", {"policy": str(tmp_path / "bernoulli"), "model": model.name, "seed": 3})
    sampled, _ = serve(served, model, prompt, 1, BLOCK)
    assert torch.equal(sampled[:, :PROMPT], prompt) and not (sampled == model.mask_id).any()


def test_policies_needing_more_than_logits_are_refused(tiny_sudoku4_model, tmp_path):
    """One error naming what the policy needs: UPO's hidden features, an oracle's gold answer, a fixed step count."""
    LearnedPolicy.for_model("upo", tiny_sudoku4_model).save(tmp_path / "upo")
    refused = [
        (str(tmp_path / "upo"), "", "hidden features"),
        ("oracle", "", "gold answer"),
        ("bernoulli", "sudoku9-small", "whole answer's layout"),  # the shipped sudoku policy's learned coupling
    ]
    for spec, model, needs in refused:
        with pytest.raises(ValueError, match=f"cannot run as a served dLLM algorithm: it needs the .*{needs}"):
            BlockPolicy(ServedPolicyConfig(policy=spec, model=model), BLOCK, 23)
    assert BlockPolicy(ServedPolicyConfig(policy="bernoulli", model="arithmetic-carry"), BLOCK, 23).policy.kind
    with pytest.raises(ValueError, match="needs a fixed number of steps: add `steps: N`"):
        BlockPolicy(ServedPolicyConfig(policy="origin"), BLOCK, 23)
    BlockPolicy(ServedPolicyConfig(policy="origin", steps=4), BLOCK, 23)


def test_bad_algorithm_configs_are_one_clear_error():
    with pytest.raises(ValueError, match="names no unmask policy: add `policy: SPEC`"):
        ServedPolicyConfig.from_dict({}, source="--dllm-algorithm-config")
    with pytest.raises(ConfigError, match="--dllm-algorithm-config: unknown key 'treshold'.*valid keys: policy"):
        ServedPolicyConfig.from_dict({"policy": "confidence", "treshold": 0.9}, source="--dllm-algorithm-config")
    with pytest.raises(ValueError, match="policy: bernoulli names unmask's shipped bernoulli policy of a model: add"):
        ServedPolicyConfig(policy="bernoulli:mode=greedy")
    with pytest.raises(ValueError, match="alpha 0.5 applies to alpha-conditioned learned policies"):
        BlockPolicy(ServedPolicyConfig(policy="confidence", alpha=0.5), BLOCK, 23)
    with pytest.raises(ValueError, match="unknown policy 'confidance'"):
        BlockPolicy(ServedPolicyConfig(policy="confidance"), BLOCK, 23)


def fake_sglang(root: Path, step: str = "self, forward_batch, full_logits, states") -> Path:
    """A minimal SGLang algorithm package with the interface unmask relies on (``step``'s parameters as given)."""
    package = root / "sglang" / "srt" / "dllm" / "algorithm"
    package.mkdir(parents=True)
    (root / "sglang" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("def scan(module):\n    return module.Algorithm\n")
    (package / "base.py").write_text(
        "class DllmAlgorithm:\n"
        "    def __init__(self, config): ...\n"
        "    def init_step_state(self, forward_batch): ...\n"
        "    def max_steps(self, block_size): ...\n"
        f"    def step({step}): ...\n"
    )
    return package


def test_install_writes_the_one_line_module_and_uninstall_removes_it(tmp_path):
    package = fake_sglang(tmp_path)
    path = shim.install(package)
    assert path == package / shim.SHIM and path.read_text().count("\n") == 1
    assert "import UnmaskPolicy as Algorithm" in path.read_text()
    assert shim.uninstall(package) == path and not path.exists()
    assert shim.uninstall(package) is None


@pytest.mark.parametrize(
    "step, what",
    [
        (
            "self, forward_batch, logits_output, states",
            r"DllmAlgorithm.step\(self, forward_batch, logits_output, states\)",
        ),
        (None, "has no step"),
    ],
)
def test_install_refuses_a_changed_interface(tmp_path, step, what):
    package = fake_sglang(tmp_path, step or "self")
    if step is None:
        (package / "base.py").write_text((package / "base.py").read_text().replace("def step(self)", "def run(self)"))
    with pytest.raises(ValueError, match=f"interface changed .*{what}.*pip install sglang=={shim.TESTED}"):
        shim.install(package)
    assert not (package / shim.SHIM).exists()


def test_the_adapter_rechecks_the_interface_it_is_imported_against():
    class Changed:
        def __init__(self, config): ...
        def init_step_state(self, forward_batch): ...
        def max_steps(self, block_size): ...
        def step(self, forward_batch, logits_output, states): ...

    with pytest.raises(ValueError, match="interface changed"):
        shim.check_class(Changed)


def test_cli_refuses_when_sglang_is_missing(monkeypatch, tmp_path):
    """``unmask sglang install`` in a Python without SGLang: exit 2, one line naming the fix."""
    env = {"PYTHONPATH": str(tmp_path), "PATH": ""}
    (tmp_path / "sglang.py").write_text("")  # a module, not a package: find_spec gives no package folder
    done = subprocess.run(
        [sys.executable, "-m", "unmask", "sglang", "install"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("unmask sglang: error: SGLang is not installed in this Python environment")
    assert len(done.stderr.strip().splitlines()) == 1


@WHEEL
def test_sglang_finds_the_installed_module_by_its_own_scan(tmp_path):
    """``install`` into a copy of the pinned wheel's package: SGLang's own import_algorithms maps
    UnmaskPolicy to unmask's class; the real package passes the source check."""
    root = tmp_path / "sglang"
    shutil.copytree(SGLANG / "srt" / "dllm", root / "srt" / "dllm")
    shim.check_source(SGLANG / "srt" / "dllm" / "algorithm")
    shim.install(root / "srt" / "dllm" / "algorithm")
    try:
        found = load_algorithms(root).algo_name_to_cls
        from unmask.integrations.sglang.algorithm import UnmaskPolicy

        assert found["UnmaskPolicy"] is UnmaskPolicy
    finally:
        unload()


def test_the_pinned_wheel_is_installed_by_the_test_command():
    """The README's test command and .ci/run install the version the sglang-test extra pins, without its CUDA
    dependencies (--no-deps), and it is the version the adapter names."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["sglang-test"]
    assert extra == [f"sglang=={shim.TESTED}"]
    install = f'pip install -q --no-deps "sglang=={shim.TESTED}"'
    for name in ("README.md", ".ci/run"):
        assert install in (ROOT / name).read_text(), name


@WHEEL
@pytest.mark.parametrize("fdfo", [False, True], ids=["sync", "fdfo"])
def test_a_policy_with_memory_carries_it_between_steps(sglang, fdfo):
    """KLASS reads its previous step's distributions (StepState.recall): kept per request between SGLang's steps
    (also across first-done-first-out rounds), it decides as in unmask's engine on one block; without them it could
    reveal only its fallback's one position per step."""
    model = tiny_mdm(PROMPT + BLOCK)
    prompt = torch.randint(0, 23, (BATCH, PROMPT), generator=torch.Generator().manual_seed(1))
    spec = "klass:conf_threshold=0.3:kl_threshold=1"
    canvas, seen = serve(sglang("UnmaskPolicy", {"policy": spec}, fdfo), model, prompt, 1, BLOCK, fdfo)
    out = generate(
        model, masked_answer(prompt, 1), get_policy(spec), SamplingConfig(block_length=BLOCK), gen_start=PROMPT
    )
    order, steps = reveal_steps(seen, model.mask_id)
    assert torch.equal(out.sequences, canvas) and torch.equal(out.order, order)
    assert int(steps.max()) < BLOCK
