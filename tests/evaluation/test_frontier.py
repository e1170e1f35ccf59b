import json
import math

import pytest

from unmask.api import frontier
from unmask.cli.main import main
from unmask.engine.config import SamplingConfig
from unmask.evaluation.evaluate import run_policy
from unmask.evaluation.frontier import steps_for_k, summarize
from unmask.models import load_model
from unmask.policies import get_policy
from unmask.policies.learned import LearnedPolicy
from unmask.tasks import get_task


@pytest.fixture
def policies(tmp_path):
    """Untrained policies for the shipped 4x4 MDM: one alpha-conditioned, one at a fixed alpha."""
    model = load_model("sudoku4")
    LearnedPolicy.for_model("bernoulli", model, d_model=16, alpha_range=[0.0, 2.0]).save(tmp_path / "cond")
    LearnedPolicy.for_model("bernoulli", model, d_model=16).save(tmp_path / "fixed")
    return tmp_path / "cond", tmp_path / "fixed"


def test_k_tokens_per_step_through_the_steps_schedule():
    task, model = get_task("sudoku4"), load_model("sudoku4")
    examples = task.generate(8, seed=0, difficulty=6)  # 10 blanks each
    assert steps_for_k(task, model, examples, 1, SamplingConfig()) is None
    steps = steps_for_k(task, model, examples, 3, SamplingConfig())
    assert steps == 4
    result, per = run_policy(task, model, examples, get_policy("confidence"), SamplingConfig(steps=steps))
    assert (per["nfe"] == 4).all()
    blocks = steps_for_k(task, model, examples, 2, SamplingConfig(block_length=8))
    assert blocks % 2 == 0 and blocks <= 2 * 4


def test_frontier_sweeps_every_method_on_the_same_examples(policies):
    cond, fixed = policies
    report = frontier(
        task="sudoku4",
        num=12,
        difficulty=[5],
        policies=f"{cond},{fixed},random",
        thresholds=[0.5, 0.9],
        ks=[1, 2],
        alphas=[0.0, 2.0],
        policy_temperatures=[0.5, 1.0],
        progress=False,
    )
    curves = report.curves
    assert list(curves) == ["confidence", "threshold", str(cond), str(fixed), "random"]
    assert curves["confidence"]["knob"] == "k" and [p["value"] for p in curves["confidence"]["points"]] == [1, 2]
    assert curves[str(cond)]["knob"] == "alpha" and [p["value"] for p in curves[str(cond)]["points"]] == [0.0, 2.0]
    assert curves[str(fixed)]["knob"] == "temperature" and len(curves[str(fixed)]["points"]) == 2
    assert curves["random"]["knob"] == "" and len(curves["random"]["points"]) == 1
    assert all(p["n"] == 12 for c in curves.values() for p in c["points"])
    ref = report.summary["reference"]
    assert ref["nfe"] == 11 and ref["solved_rate"] == curves["confidence"]["points"][0]["solved_rate"]
    assert "vs_threshold" in report.summary[str(cond)] and "fewest mean NFE" in report.table


def test_summary_speedup_and_threshold_gain_at_equal_nfe():
    point = lambda v, s, n: {"value": v, "solved_rate": s, "nfe": n, "tpf": 40 / n}  # noqa: E731
    curves = {
        "confidence": {"knob": "k", "points": [point(1, 0.80, 40.0), point(4, 0.50, 10.0)]},
        "threshold": {"knob": "threshold", "points": [point(0.9, 0.70, 12.0), point(0.99, 0.80, 20.0)]},
        "learned": {"knob": "alpha", "points": [point(1.0, 0.795, 10.0), point(0.0, 0.80, 16.0)]},
    }
    summary = summarize(curves)
    assert summary["learned"]["speedup"] == pytest.approx(4.0) and summary["threshold"]["speedup"] == pytest.approx(2.0)
    gains = summary["learned"]["vs_threshold"]
    assert gains[0]["threshold_solved_rate"] is None  # NFE 10 lies left of the threshold curve
    assert gains[1]["threshold_solved_rate"] == pytest.approx(0.75) and gains[1]["gain"] == pytest.approx(0.05)
    # AUP over (tokens per forward, solved %), y_max 80: confidence's k=4 point (50%) falls > 5 points and is left out
    assert summary["confidence"]["aup"] == pytest.approx(80.0)
    w = math.exp(-3 * (1 - 79.5 / 80))
    assert summary["learned"]["aup"] == pytest.approx(2.5 * 80 + (4 - 2.5) * (79.5 * w + 80) / 2)


def test_cli_frontier_and_alpha_at_eval_time(policies, tmp_path, capsys):
    cond, _ = policies
    out, png = tmp_path / "f.json", tmp_path / "f.png"
    assert (
        main(
            [
                "frontier",
                "--task",
                "sudoku4",
                "--num",
                "8",
                "--clues",
                "6",
                "--ks",
                "1,4",
                "--thresholds",
                "0.9",
                "--policies",
                str(cond),
                "--alphas",
                "0,1",
                "--json",
                str(out),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert set(data["curves"]) == {"confidence", "threshold", str(cond)} and data["model"] == "sudoku4"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(["eval", "--task", "sudoku4", "--num", "4", "--policies", f"{cond},{cond}:alpha=2", "--alpha", "0.5"]) == 0
    )
    text = capsys.readouterr().out
    assert "bernoulli:cond:alpha=0.5" in text and "bernoulli:cond:alpha=2" in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "--policies", "confidence", "--alpha", "0.5"], "applies to alpha-conditioned learned policies"),
        (
            ["eval", "--policies", "bernoulli"],
            "train one with `unmask train-policy --policy bernoulli --model sudoku4`",
        ),
        (["eval", "--policies", "{cond}:alpha=3"], "outside the range the policy was trained for [0, 2]"),
        (["eval", "--policies", "{fixed}:temperature=0"], "tau_pi must be > 0"),
        (["eval", "--policies", "{fixed}:sigma=1"], "unknown option 'sigma=1'; bernoulli policies take"),
        (["frontier", "--ks", "0"], "ks (--ks) must be a list of integers >= 1, got [0]"),
        (
            ["frontier", "--thresholds", "1.5"],
            "thresholds (--thresholds) must be a list of numbers in (0, 1], got [1.5]",
        ),
        (["train-policy", "--policy", "bernoulli", "--alpha", "-1"], "alpha (--alpha) must be a number >= 0, got -1.0"),
    ],
)
def test_bad_input_is_one_clear_line(policies, argv, message, capsys):
    cond, fixed = policies
    argv = [a.format(cond=cond, fixed=fixed) for a in argv]
    assert main([argv[0], "--task", "sudoku4", *(["--num", "2"] if argv[0] != "train-policy" else []), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_policy_trained_by_imitation_is_swept_over_its_correctness_bound(tmp_path):
    """Its calibration (config.calibration) makes bound=EPS its speed knob: a looser bound, fewer forwards."""
    from dataclasses import replace

    model = load_model("sudoku4")
    policy = LearnedPolicy.for_model("upo", model, d_model=16, n_head=2)
    policy.config = replace(policy.config, calibration=[0.0, 8.0])
    policy.save(tmp_path / "imitated")
    report = frontier(
        task="sudoku4",
        num=12,
        difficulty=[5],
        policies=str(tmp_path / "imitated"),
        thresholds=[0.9],
        ks=[1],
        bounds=[0.001, 0.3],
        progress=False,
    )
    curve = report.curves[str(tmp_path / "imitated")]
    assert curve["knob"] == "bound" and [p["value"] for p in curve["points"]] == [0.001, 0.3]
    tight, loose = curve["points"]
    assert loose["nfe"] < tight["nfe"]
