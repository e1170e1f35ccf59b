"""Learned policies on a block-causal model (LLaDA2.x): `unmask train-policy` trains a Bernoulli (parallel) policy
and a UPO policy on a tiny random LLaDA2 checkpoint through the normal path, and `unmask eval` decodes with them."""

import csv
import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("math_verify")

from tiny_hf import full_vocab  # noqa: E402

from unmask.cli.main import main  # noqa: E402
from unmask.models.tiny import save_tiny, tiny_llada2_config  # noqa: E402


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def llada2(tmp_path_factory):
    path = save_tiny(tmp_path_factory.mktemp("llada2") / "ckpt", "llada2")
    full_vocab(tiny_llada2_config()["vocab_size"]).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "policy, options",
    [("bernoulli", ["--alpha-range", "0,2"]), ("upo", ["--reference", "topk", "--d-model", "16"])],
)
def test_train_policy_on_llada2_then_decode(llada2, tmp_path, capsys, policy, options):
    data = write_jsonl(
        tmp_path / "train.jsonl", [{"question": f"what is {a} + 2 ?", "answer": f"#### {a + 2}"} for a in range(4)]
    )
    common = ["--model", f"hf:{llada2}", "--task", "gsm8k", "--gen-length", "12", "--steps", "4", "--cache", "block"]
    out = tmp_path / policy
    rc = main(
        ["train-policy", *common, "--policy", policy, *options, "--data", data, "--eval-data", data, "--eval-size", "2"]
        + ["--num-generations", "2", "--prompts-per-step", "2", "--max-steps", "2", "--output-dir", str(out)]
    )
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((out / "last" / "config.json").read_text())
    assert saved["mdm"] == f"hf:{llada2}" and saved["train"]["run"]["task_options"]["gen_length"] == 12
    updates = [r for r in csv.DictReader((out / "metrics.csv").open()) if r["loss"]]
    assert [r["step"] for r in updates] == ["1", "2"]  # two GRPO updates, each with a loss
    rc = main(
        ["eval", *common, "--data", data, "--limit", "2", "--policies", f"scheduled_threshold:0.9,{out / 'last'}"]
    )
    assert rc == 0, capsys.readouterr().err
    report = capsys.readouterr().out
    assert "scheduled_threshold:0.9" in report and str(out / "last") in report
