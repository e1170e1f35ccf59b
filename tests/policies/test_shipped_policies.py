"""The policies shipped in src/unmask/assets/policies load by kind for their MDM and decode its task."""

import json

import pytest

from unmask.api import SHIPPED_POLICIES, evaluate

SHIPPED = sorted(p.name for p in SHIPPED_POLICIES.glob("*/"))


def test_policies_are_shipped():
    assert {
        "upo-sudoku9-small",
        "upo-sudoku9-base",
        "upo-zebra",
        "bernoulli-sudoku9-small",
        "upo-arithmetic-carry",
        "bernoulli-arithmetic-carry",
    } <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_resolves_by_kind_and_decodes(name):
    meta = json.loads((SHIPPED_POLICIES / name / "config.json").read_text())
    kind = meta["policy"]["kind"]
    assert name == f"{kind}-{meta['mdm']}" and (SHIPPED_POLICIES / name / "README.md").is_file()
    report = evaluate(
        task=meta["task"],
        model=meta["mdm"],
        policies=f"confidence,{kind}",
        num=4,
        task_options=meta["train"]["run"]["task_options"],
        progress=False,
    )
    learned = next(r for r in report.results if r.policy == kind)
    assert learned.n == 4 and learned.nfe >= 1
