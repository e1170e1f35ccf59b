"""Math tasks: data, prompt layout on a tiny HF model, answer extraction, verified and UPO rewards, CLI."""

import json
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from tiny_hf import WORDS, save_bert

from unmask.cli.main import main
from unmask.engine.decode import GenerationOutput
from unmask.models import load_model
from unmask.tasks import MathExample, get_task, math_reward
from unmask.tasks.math_reward import extract_answer, is_equivalent, relative_logprob_bonus
from unmask.training.rewards import trajectory_logprob

pytest.importorskip("math_verify")
pytest.importorskip("transformers")
MASK, EOS = WORDS.index("[MASK]"), WORDS.index("[EOS]")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return load_model(f"hf:{save_bert(tmp_path_factory.mktemp('chat-bert'), chat=True)}")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_shared_gsm8k_and_math500_load_with_their_gold_answers(shared_data):
    gsm = get_task("gsm8k").load(str(shared_data / "gsm8k_test.jsonl"))
    math = get_task("math500").load(str(shared_data / "math500_test.jsonl"))
    assert len(gsm) == 1319 and len(math) == 500
    assert gsm[0].answer == "18" and gsm[0].question.startswith("Janet")
    assert math[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)" and "\\boxed" in math[0].solution
    assert all(ex.answer for ex in gsm + math)


def test_reference_solutions_earn_full_reward(shared_data):
    for name, file, n in (("gsm8k", "gsm8k_test.jsonl", 300), ("math500", "math500_test.jsonl", 100)):
        task = get_task(name)
        examples = task.load(str(shared_data / file))[:n]
        assert task.score(examples, [ex.solution for ex in examples]).solved.mean() >= 0.99, name


def test_loader_errors_name_the_line(tmp_path):
    task = get_task("gsm8k")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"question": "q", "answer": "#### 1"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        task.load(str(bad_json))
    no_gold = write_jsonl(tmp_path / "nogold.jsonl", [{"question": "q", "answer": "it is 4"}])
    with pytest.raises(ValueError, match="nogold.jsonl:1: cannot find the final answer.*#### N"):
        task.load(no_gold)
    no_question = write_jsonl(tmp_path / "noq.jsonl", [{"answer": "#### 4"}])
    with pytest.raises(ValueError, match="noq.jsonl:1: no 'question'"):
        task.load(no_question)
    with pytest.raises(FileNotFoundError):
        task.load(str(tmp_path / "missing.jsonl"))
    with pytest.raises(NotImplementedError, match="--data"):
        task.generate(3)


def test_hub_dataset_names_go_through_datasets(monkeypatch):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"problem": "What is 1/2 + 1/2?", "solution": "It is \\boxed{1}.", "answer": "1"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    examples = get_task("math500").load("HuggingFaceH4/MATH-500")
    assert calls == [("HuggingFaceH4/MATH-500", None, "test")]
    assert examples == [MathExample("What is 1/2 + 1/2?", "1", "It is \\boxed{1}.")]
    gsm8k_rows = [{"question": "q", "answer": "#### 7"}]
    monkeypatch.setitem(
        sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda name, config, split: gsm8k_rows)
    )
    assert get_task("gsm8k").load("openai/gsm8k:main@train")[0].answer == "7"


@pytest.mark.parametrize(
    "text, answer",
    [
        ("so the total is \\boxed{\\frac{1}{2}} and done", "\\frac{1}{2}"),
        ("first \\boxed{3}, then \\boxed{\\{1, 2\\} \\cup {3}}", "\\{1, 2\\} \\cup {3}"),
        ("Janet sells 9 eggs.\n#### 1,600", "1600"),
        ("The answer is: $42$.", "42"),
        ("She pays $3 + $4 = $7.", "7"),
        ("costs 1,234.50 dollars", "1234.50"),
        ("no digits at all", None),
    ],
)
def test_answer_extraction(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "gold, answer, equal",
    [
        ("18", "18.00", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", True),
        ("p - q", "-q + p", True),
        ("18", "19", False),
        ("18", None, False),
        ("18", "", False),
    ],
)
def test_math_verify_equivalence(gold, answer, equal):
    assert is_equivalent(gold, answer) is equal


def test_rewards_work_off_the_main_thread():
    task = get_task("math500")
    examples = [MathExample("q", "\\frac{1}{2}")] * 2
    with ThreadPoolExecutor(2) as pool:
        scores = pool.submit(task.score, examples, ["\\boxed{0.5}", "\\boxed{2}"]).result()
    assert scores.solved.tolist() == [True, False] and scores.cell_accuracy.tolist() == [1.0, 0.0]


def test_a_hanging_verification_counts_as_wrong(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(math_reward, "symbolic_equal", lambda gold, answer: release.wait(5) or True)
    start = time.perf_counter()
    assert is_equivalent("1", "2", timeout=0.2) is False
    assert time.perf_counter() - start < 2
    release.set()


def test_upo_reward_adds_the_relative_logprob_bonus():
    bonus = relative_logprob_bonus([-1.0, -3.0, -2.0, -5.0, -5.0], ["a", "a", "a", "b", "b"])
    np.testing.assert_allclose(bonus, [0.25, 0.0, 0.125, 0.0, 0.0])
    task = get_task("gsm8k", reward="upo")
    first, second = MathExample("q1", "3"), MathExample("q2", "4")
    examples = [first, first, first, second, second]  # G rollouts per prompt, grouped by example
    completions = ["\\boxed{3}", "\\boxed{5}", "\\boxed{3}", "\\boxed{4}", "#### 4"]
    scores = task.score(examples, completions, logprob=torch.tensor([-1.0, -3.0, -2.0, -4.0, -6.0]))
    np.testing.assert_allclose(scores.reward, [1.25, 0.0, 1.125, 1.25, 1.0])
    assert scores.solved.tolist() == [True, False, True, True, True]
    assert task.reward(completions, examples, logprob=[0.0] * 5, group=[0, 0, 0, 1, 1]) == [1.0, 0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="logprob"):
        task.reward(completions, examples)
    assert task.score(examples, completions).reward.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]  # evaluation needs no bonus
    assert get_task("gsm8k").score(examples, completions).reward.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]


def test_trajectory_logprob_sums_revealed_tokens_only():
    conf = torch.tensor([[0.5, float("nan"), 0.25], [1.0, 1.0, float("nan")]])
    out = GenerationOutput(
        sequences=torch.zeros(2, 3), nfe=torch.ones(2), order=torch.zeros(2, 3), reveal_confidence=conf
    )
    torch.testing.assert_close(trajectory_logprob(out), torch.tensor([np.log(0.5 * 0.25), 0.0], dtype=torch.float64))


def test_encode_left_pads_prompts_and_appends_gen_length_masks(chat_model):
    task = get_task("gsm8k", gen_length=6, template="what is {question}", response_prefix="")
    examples = [MathExample("1 + 2 ?", "3"), MathExample("the answer is 12 + 30 - 4 ?", "38")]
    batch = task.encode(examples, chat_model)
    tok = chat_model.tokenizer
    prompts = [
        tok(
            tok.apply_chat_template(
                [{"role": "user", "content": f"what is {ex.question}"}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for ex in examples
    ]
    P = max(map(len, prompts))
    assert batch.gen_start == P and batch.input_ids.shape == (2, P + 6)
    assert (batch.input_ids[:, P:] == MASK).all() and batch.attention_mask[:, P:].all()
    short = len(prompts[0])
    assert batch.input_ids[0, P - short : P].tolist() == prompts[0] and batch.input_ids[1, :P].tolist() == prompts[1]
    assert batch.attention_mask[0].tolist() == [0] * (P - short) + [1] * (short + 6)
    assert (batch.input_ids[0, : P - short] == chat_model.pad_id).all()
    assert prompts[0][-1] == tok.convert_tokens_to_ids("<assistant>")
    plain = get_task("gsm8k", gen_length=6, chat=False, template="what is {question}", response_prefix="").encode(
        examples, chat_model
    )
    assert tok.convert_tokens_to_ids("<user>") not in plain.input_ids.tolist()[0]


def test_decode_stops_at_eos_and_drops_special_tokens(chat_model):
    task = get_task("gsm8k", gen_length=6)
    digit = WORDS.index
    rows = torch.tensor(
        [
            [2, 3, digit("4"), digit("2"), MASK, EOS, digit("7"), digit("7")],
            [2, 3, digit("#"), digit("#"), digit("1"), digit("[SEP]"), digit("9"), digit("9")],
        ]
    )
    assert task.decode([None, None], rows, chat_model) == ["4 2", "# # 1 9 9"]  # [SEP] is special, not the EOS


def test_prompts_longer_than_the_context_name_the_fix(tmp_path):
    model = load_model(f"hf:{save_bert(tmp_path / 'short-context', max_positions=24)}")
    task = get_task("gsm8k", gen_length=16, template="what is {question}", response_prefix="")
    with pytest.raises(ValueError, match="more than .*context of 24; lower --gen-length"):
        task.encode([MathExample("1 + 2 + 3 + 4 ?", "10")], model)


def test_task_options_and_model_kind_are_checked(tiny_sudoku4_model):
    assert get_task("math500", gen_length=32).gen_length == 32
    with pytest.raises(ValueError, match="task sudoku9 has no option 'gen_length'; it takes none"):
        get_task("sudoku9", gen_length=8)
    with pytest.raises(ValueError, match="unknown reward"):
        get_task("gsm8k", reward="dense")
    with pytest.raises(ValueError, match="question"):
        get_task("gsm8k", template="no placeholder")
    with pytest.raises(ValueError, match="needs a text MDM"):
        get_task("gsm8k").encode([MathExample("q", "1")], tiny_sudoku4_model)


def test_cli_eval_runs_a_hf_model_on_gsm8k(tmp_path, capsys):
    model_dir = save_bert(tmp_path / "bert", chat=True)
    data = write_jsonl(
        tmp_path / "gsm8k.jsonl",
        [
            {"question": "what is 1 + 2 ?", "answer": "1 + 2 = 3\n#### 3"},
            {"question": "what is 2 + 2 ?", "answer": "#### 4"},
            {"question": "what is 3 + 2 ?", "answer": "#### 5"},
        ],
    )
    out = tmp_path / "results.json"
    rc = main(
        [
            "eval",
            "--model",
            f"hf:{model_dir}",
            "--task",
            "gsm8k",
            "--data",
            data,
            "--limit",
            "2",
            "--gen-length",
            "8",
            "--block-length",
            "4",
            "--steps",
            "4",
            "--policies",
            "confidence,random",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    results = json.loads(out.read_text())
    assert [r["policy"] for r in results["results"]] == ["confidence", "random"]
    assert all(r["n"] == 2 and r["nfe"] == 4 for r in results["results"])
    assert results["model"] == f"hf:{model_dir}" and "confidence" in capsys.readouterr().out
    assert main(["eval", "--task", "sudoku4", "--num", "2", "--dtype", "bfloat16"]) == 2
    assert "apply to Hugging Face models" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_policy_runs_upo_on_a_hf_model_with_the_upo_reward(tmp_path, capsys):
    """The GPU recipe's train-policy form, end to end on a tiny masked LM: data file, HF flags, blocks, UPO reward."""
    model_dir = save_bert(tmp_path / "bert", chat=True)
    data = write_jsonl(
        tmp_path / "train.jsonl", [{"question": f"what is {a} + 2 ?", "answer": f"#### {a + 2}"} for a in range(4)]
    )
    out = tmp_path / "upo"
    rc = main(
        [
            "train-policy",
            "--model",
            f"hf:{model_dir}",
            "--task",
            "gsm8k",
            "--reward",
            "upo",
            "--data",
            data,
            "--eval-data",
            data,
            "--eval-size",
            "2",
            "--gen-length",
            "8",
            "--block-length",
            "4",
            "--steps",
            "8",
            "--reference",
            "topk",
            "--num-generations",
            "2",
            "--prompts-per-step",
            "2",
            "--max-steps",
            "2",
            "--d-model",
            "16",
            "--output-dir",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((out / "last" / "config.json").read_text())
    assert saved["train"]["run"]["task_options"] == {"gen_length": 8, "reward": "upo"}
    assert saved["policy"]["top_k"] == 5 and saved["mdm"] == f"hf:{model_dir}"
    rc = main(
        [
            "eval",
            "--model",
            f"hf:{model_dir}",
            "--task",
            "gsm8k",
            "--data",
            data,
            "--limit",
            "2",
            "--gen-length",
            "8",
            "--block-length",
            "4",
            "--steps",
            "8",
            "--policies",
            f"confidence,{out / 'best'}",
        ]
    )
    assert rc == 0, capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_a_bernoulli_policy_on_a_hf_model_and_plots_its_frontier(tmp_path, capsys):
    """The parallel GPU recipe's form on a tiny masked LM: alpha-conditioned Bernoulli on gsm8k, full diffusion,
    then `unmask frontier` with the learned policy beside threshold and k per step."""
    model_dir = save_bert(tmp_path / "bert", chat=True)
    data = write_jsonl(
        tmp_path / "train.jsonl", [{"question": f"what is {a} + 2 ?", "answer": f"#### {a + 2}"} for a in range(4)]
    )
    out = tmp_path / "bern"
    rc = main(
        [
            "train-policy",
            "--model",
            f"hf:{model_dir}",
            "--task",
            "gsm8k",
            "--policy",
            "bernoulli",
            "--alpha-range",
            "0,2",
            "--base-threshold-hi",
            "0.7",
            "--data",
            data,
            "--eval-data",
            data,
            "--eval-size",
            "2",
            "--gen-length",
            "8",
            "--num-generations",
            "2",
            "--prompts-per-step",
            "2",
            "--max-steps",
            "2",
            "--d-model",
            "16",
            "--output-dir",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((out / "best" / "config.json").read_text())
    assert saved["policy"]["alpha_range"] == [0.0, 2.0] and saved["mdm"] == f"hf:{model_dir}"
    report = tmp_path / "frontier.json"
    rc = main(
        [
            "frontier",
            "--model",
            f"hf:{model_dir}",
            "--task",
            "gsm8k",
            "--data",
            data,
            "--limit",
            "2",
            "--gen-length",
            "8",
            "--policies",
            str(out / "best"),
            "--alphas",
            "0,2",
            "--thresholds",
            "0.5,0.9",
            "--ks",
            "1,8",
            "--json",
            str(report),
            "--plot",
            str(tmp_path / "frontier.png"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    curves = json.loads(report.read_text())["curves"]
    learned = curves[str(out / "best")]
    assert learned["knob"] == "alpha" and [p["value"] for p in learned["points"]] == [0.0, 2.0]
    assert [p["nfe"] for p in curves["confidence"]["points"]] == [8.0, 1.0] and (tmp_path / "frontier.png").is_file()
