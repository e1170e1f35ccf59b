"""Hugging Face Hub round trips for built-in MDMs and learned policies: a local directory and an offline hub
cache laid out as huggingface_hub writes it (``models--OWNER--NAME/{refs,snapshots}``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

hub = pytest.importorskip("huggingface_hub")

from huggingface_hub import constants  # noqa: E402

from unmask.api import evaluate, resolve_policy  # noqa: E402
from unmask.cli.main import main  # noqa: E402
from unmask.core.checkpoint import CONFIG, load_json  # noqa: E402
from unmask.core.hub import CARD  # noqa: E402
from unmask.models import MaskedTransformer, load_model  # noqa: E402
from unmask.policies.learned import LearnedPolicy, load_policy  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "unmask" / "assets" / "policies"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, with the hub unreachable (HF_HUB_OFFLINE)."""
    root = tmp_path / "hub-cache"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def cache_repo(cache: Path, repo_id: str, source: Path, refs: tuple[str, ...] = ("main",)) -> None:
    """Put ``source``'s files into ``cache`` as the snapshot ``COMMIT`` of ``repo_id``, named by ``refs``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    for ref in refs:
        (repo / "refs" / ref).write_text(COMMIT)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_mdm_round_trip_keeps_weights_recipe_and_writes_a_card(tmp_path):
    model = load_model("arithmetic-carry", device="cpu")
    out = model.save_pretrained(tmp_path / "carry")
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", CONFIG, CARD}
    again = MaskedTransformer.from_pretrained(out)
    assert same_weights(model, again) and again.name == "arithmetic-carry"
    assert load_json(out / CONFIG)["train"]["task_options"] == {"max_digits": 16, "propagate": 0.8}
    card = (out / CARD).read_text()
    for text in (
        "library_name: unmask",
        "masked-diffusion-model",
        "`arithmetic`",
        "max_digits=16, propagate=0.8",
        "## Training recipe",
        "unmask eval --task arithmetic --model hf://OWNER/NAME",
    ):
        assert text in card


def test_policy_round_trip_keeps_metrics_and_refuses_the_wrong_kind(tmp_path):
    policy = load_policy(SHIPPED / "upo-arithmetic-carry")
    out = policy.save_pretrained(tmp_path / "upo")
    again = LearnedPolicy.from_pretrained(out)
    assert same_weights(policy, again) and again.config == policy.config
    card = (out / CARD).read_text()
    assert "upo unmasking policy for `arithmetic-carry` on `arithmetic`" in card and "## Metrics" in card
    assert "eval_solved" in card
    with pytest.raises(ValueError, match="holds a LearnedPolicy, not a MaskedTransformer"):
        MaskedTransformer.from_pretrained(out)


def test_hf_specs_resolve_through_the_offline_cache(tmp_path, cache):
    load_model("arithmetic-carry", device="cpu").save_pretrained(tmp_path / "mdm")
    load_policy(SHIPPED / "upo-arithmetic-carry").save_pretrained(tmp_path / "upo")
    cache_repo(cache, "someone/carry-mdm", tmp_path / "mdm")
    cache_repo(cache, "someone/carry-upo", tmp_path / "upo", refs=("main", "v1"))
    mdm = load_model("hf://someone/carry-mdm", device="cpu")
    for spec in ("hf://someone/carry-upo", "hf://someone/carry-upo@v1", f"hf://someone/carry-upo@{COMMIT}"):
        assert resolve_policy(spec, mdm).name.startswith("upo:hf://someone/carry-upo")
    assert resolve_policy("hf://someone/carry-upo:mode=sample", mdm).mode == "sample"
    assert LearnedPolicy.from_pretrained("someone/carry-upo", revision="v1").kind == "upo"
    report = evaluate(
        task="arithmetic",
        model="hf://someone/carry-mdm",
        policies="hf://someone/carry-upo",
        num=4,
        difficulty=[16],
        progress=False,
        model_options={"device": "cpu"},
    )
    assert report.results[0].n == 4  # the hub MDM's own task options (max_digits=16) were used


def test_an_uncached_spec_without_a_hub_is_one_line(cache, capsys):
    mdm = load_model("arithmetic-carry", device="cpu")
    with pytest.raises(ValueError, match=r"cannot load someone/absent@main: the Hugging Face Hub is not reachable"):
        resolve_policy("hf://someone/absent", mdm)
    code = main(
        [
            "eval",
            "--task",
            "arithmetic",
            "--model",
            "arithmetic-carry",
            "--policies",
            "hf://someone/absent",
            "--num",
            "2",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not in the local cache" in err
    with pytest.raises(ValueError, match="must be OWNER/NAME"):
        resolve_policy("hf://just-a-name", mdm)


def test_push_to_hub_uploads_the_saved_folder(monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=""):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    url = load_policy(SHIPPED / "upo-arithmetic-carry").push_to_hub("someone/carry-upo", private=True, token="t")
    assert url.endswith("/commit/abc") and calls["repo"] == ("someone/carry-upo", True, True)
    assert {CONFIG, CARD, "model.safetensors"} <= set(calls["files"])
