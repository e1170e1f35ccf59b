"""The policies shipped in src/unmask/assets/policies load (KIND-MODEL by kind for its MDM, another by its name) and decode their task."""

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
    """KIND-MODEL loads by its kind for its MDM; another shipped policy (upo-dagger-sudoku9-small) by its name."""
    meta = json.loads((SHIPPED_POLICIES / name / "config.json").read_text())
    kind = meta["policy"]["kind"]
    spec = kind if name == f"{kind}-{meta['mdm']}" else name
    assert name.startswith(f"{kind}-") and name.endswith(f"-{meta['mdm']}")
    assert (SHIPPED_POLICIES / name / "README.md").is_file()
    report = evaluate(
        task=meta["task"],
        model=meta["mdm"],
        policies=f"confidence,{spec}",
        num=4,
        task_options=meta["train"]["run"]["task_options"],
        progress=False,
    )
    learned = next(r for r in report.results if r.policy == spec)
    assert learned.n == 4 and learned.nfe >= 1
