"""The ``unmask`` model of lm-evaluation-harness on a tiny local model and a task YAML over a local JSONL."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

import lm_eval  # noqa: E402
import lm_eval.evaluator  # noqa: E402
import tiny_hf  # noqa: E402
from llada_reference import llada_module  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from unmask.api import evaluate  # noqa: E402
from unmask.core.extras import require  # noqa: E402
from unmask.integrations.lm_eval import UnmaskLM  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "lm_eval"
SETTINGS = {"gen_length": 8, "steps": 4, "block_length": 4}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(lm_eval.evaluator, "add_env_info", lambda results: None)  # lm-eval's `pip list`: 4 s a run


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return tiny_hf.save_bert(tmp_path_factory.mktemp("bert"), max_positions=256)


def model_args(path: Path, **extra) -> str:
    return ",".join(f"{k}={v}" for k, v in {"model": f"hf:{path}", "device": "cpu", **SETTINGS, **extra}.items())


def run_harness(bert: Path, task: str, **extra) -> dict:
    return lm_eval.simple_evaluate(
        model="unmask",
        model_args=model_args(bert, **extra),
        tasks=[task],
        batch_size=4,
        task_manager=TaskManager(include_path=str(DATA), include_defaults=False),
        log_samples=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["confidence", "threshold:0.5", "random"])
def test_lm_eval_and_unmask_eval_agree(bert, policy):
    harness = run_harness(bert, "unmask_tiny_math", policy=policy)
    ours = evaluate(
        task="gsm8k",
        model=f"hf:{bert}",
        policies=policy,
        data=str(DATA / "tiny_math.jsonl"),
        steps=SETTINGS["steps"],
        block_length=SETTINGS["block_length"],
        batch_size=4,
        progress=False,
        model_options={"device": "cpu"},
        task_options={"gen_length": SETTINGS["gen_length"], "chat": False},
    )
    solved = harness["results"]["unmask_tiny_math"]["solved,none"]
    assert 0 < solved < 1  # the tiny model answers some questions right: the agreement is not 0 == 0
    assert solved == ours.results[0].solved_rate
    assert len(harness["samples"]["unmask_tiny_math"]) == ours.results[0].n == 12


@pytest.mark.slow
def test_multiple_choice_runs_the_monte_carlo_likelihood(bert):
    harness = run_harness(bert, "unmask_tiny_choice", mc_num=2, mc_batch_size=2, check_greedy=False)
    samples = harness["samples"]["unmask_tiny_choice"]
    assert len(samples) == 12
    lls = [resp[0][0] for resp in samples[0]["resps"]]
    assert len(lls) == 3 and all(ll < 0 for ll in lls) and len(set(lls)) == 3
    assert 0 <= harness["results"]["unmask_tiny_choice"]["acc,none"] <= 1


def test_loglikelihood_is_llada_get_log_likelihood(bert):
    get_log_likelihood = llada_module("get_log_likelihood").get_log_likelihood
    for cfg_scale in (0.0, 2.0):
        lm = UnmaskLM(model=f"hf:{bert}", device="cpu", mc_num=8, mc_batch_size=4, cfg_scale=cfg_scale, seed=7)
        context, continuation = "what is 1 + 2 ?", " the answer is 3 ."
        ((ll, _),) = lm.loglikelihood([Instance("loglikelihood", {}, (context, continuation), 0)], disable_tqdm=True)
        prompt, answer = lm.encode_pair(context, continuation)
        assert len(answer) == 5
        torch.manual_seed(7)
        expected = get_log_likelihood(
            lm.mdm,
            torch.tensor(prompt),
            torch.tensor(answer),
            mc_num=8,
            batch_size=4,
            cfg_scale=cfg_scale,
            mask_id=lm.mdm.mask_id,
        )
        assert ll == expected


def test_is_greedy_follows_the_confidence_decode(bert):
    lm = UnmaskLM(model=f"hf:{bert}", device="cpu", mc_num=2, mc_batch_size=2)
    prompt, _ = lm.encode_pair("what is 1 + 2 ?", " 3")
    greedy = lm.tokenizer.decode(lm.greedy_answer(prompt, 3))
    requests = [
        Instance("loglikelihood", {}, ("what is 1 + 2 ?", " " + text), i) for i, text in enumerate([greedy, "# # #"])
    ]
    flags = [g for _, g in lm.loglikelihood(requests, disable_tqdm=True)]
    assert flags == [True, greedy == "# # #"]


def test_left_padding_and_stops(bert):
    lm = UnmaskLM(model=f"hf:{bert}", device="cpu", gen_length=6)
    contexts = ["what is 1 + 2 ?", "what is the answer to 9 - 7 - 1 + 4 ?", "2 + 2 ="]
    batched = lm.generate_texts(contexts, 6, [], [0, 1, 2])
    assert batched == [lm.generate_texts([c], 6, [], [i])[0] for i, c in enumerate(contexts)]  # padding changes nothing
    word = batched[0].split()[2]
    cut = lm.generate_texts(contexts[:1], 6, [f" {word}"], [0])[0]
    assert cut == batched[0][: batched[0].index(f" {word}")]
    lm.mdm.stop_ids = (lm.tokenizer.convert_tokens_to_ids(batched[0].split()[1]),)  # EOS where the 2nd word was
    assert lm.generate_texts(contexts[:1], 6, [], [0])[0] == batched[0].split()[0]


def test_bad_model_args_name_the_valid_keys(bert):
    with pytest.raises(
        ValueError, match=r"unknown --model_args key\(s\) polcy .*valid keys: model, policy, gen_length"
    ):
        UnmaskLM.create_from_arg_string(f"model=hf:{bert},polcy=confidence")
    with pytest.raises(ValueError, match="needs model=hf:NAME_OR_PATH"):
        UnmaskLM.create_from_arg_string("policy=confidence")
    with pytest.raises(ValueError, match="no 'auto' batch size"):
        UnmaskLM.create_from_arg_string(f"model=hf:{bert},device=cpu", {"batch_size": "auto"})


def test_a_policy_for_another_model_is_refused_before_generating(bert):
    shipped = Path(__file__).resolve().parents[2] / "src" / "unmask" / "assets" / "policies" / "upo-sudoku4"
    with pytest.raises(ValueError, match="policy was trained with MDM 'sudoku4'"):
        UnmaskLM(model=f"hf:{bert}", device="cpu", policy=str(shipped))
    with pytest.raises(ValueError, match="has no tokenizer"):
        UnmaskLM(model="sudoku4", device="cpu")


def test_registered_by_import_and_by_entry_point():
    from lm_eval.api.registry import Registry, get_model

    assert get_model("unmask") is UnmaskLM
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="lm_eval.models") if ep.name == "unmask"]
    registry = Registry("model")
    registry.register("unmask", target=entry)  # what lm-eval's plugin discovery does with the entry point
    assert registry.get("unmask") is UnmaskLM


def test_a_missing_extra_names_its_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ValueError, match=r"pip install 'unmask\[lm-eval\]'"):
        require("lm_eval", "lm-eval", "the lm-evaluation-harness model")


@pytest.mark.slow
def test_unmask_lm_eval_runs_the_harness_command_line(bert, tmp_path, monkeypatch):
    """The documented form from another working directory, with no device: lm-eval's cuda:0 default would fail
    on a machine without a GPU; unmask's default device is used."""
    from unmask.cli.main import main

    monkeypatch.chdir(tmp_path)
    args = model_args(bert).replace(",device=cpu", "")
    assert "device" not in args
    code = main(
        [
            "lm-eval",
            "run",
            "--model",
            "unmask",
            "--model_args",
            args,
            "--tasks",
            "unmask_tiny_math",
            "--include_path",
            str(DATA),
            "--batch_size",
            "4",
            "--output_path",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert list(tmp_path.rglob("results_*.json"))


def test_chat_rendered_prompts_are_not_given_special_tokens_twice(tmp_path):
    lm = UnmaskLM(model=f"hf:{tiny_hf.save_bert(tmp_path, chat=True)}", device="cpu", gen_length=4)
    plain = lm.encode("what is 1 + 2 ?")
    assert plain[0] == lm.tokenizer.cls_token_id  # a plain prompt gets the tokenizer's [CLS] ... [SEP]
    text = lm.apply_chat_template([{"role": "user", "content": "what is 1 + 2 ?"}])
    assert text == "<user> what is 1 + 2 ? <assistant> "
    assert lm.encode(text) == lm.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_lm_eval_runs_diffusion_gemma_and_agrees_with_unmask_eval(tmp_path):
    """A uniform-state model through the harness: generate_until on renoised canvases, the same completions as
    `unmask eval` with the same seeds; its loglikelihood requests get DiffusionGemma's clear error."""
    from unmask.models.tiny import save_tiny

    path = save_tiny(tmp_path / "dg", "diffusion_gemma")
    harness = lm_eval.simple_evaluate(
        model="unmask",
        model_args=f"model=hf:{path},device=cpu,gen_length=8,steps=4,policy=eb:0.1",
        tasks=["unmask_tiny_math"],
        batch_size=4,
        task_manager=TaskManager(include_path=str(DATA), include_defaults=False),
        log_samples=True,
    )
    ours = evaluate(
        task="gsm8k",
        model=f"hf:{path}",
        policies="eb:0.1",
        data=str(DATA / "tiny_math.jsonl"),
        steps=4,
        batch_size=4,
        progress=False,
        model_options={"device": "cpu"},
        task_options={"gen_length": 8, "chat": False},
    )
    samples = harness["samples"]["unmask_tiny_math"]
    assert len(samples) == ours.results[0].n == 12
    assert harness["results"]["unmask_tiny_math"]["solved,none"] == ours.results[0].solved_rate
    lm = UnmaskLM(model=f"hf:{path}", device="cpu", gen_length=8, steps=4)
    with pytest.raises(ValueError, match="no forward over a whole sequence"):
        lm.loglikelihood([Instance("loglikelihood", {}, ("what is 1 + 1 ?", " 2"), 0)])
