"""The Hugging Face Hub for built-in MDMs and learned policies, in unmask's own checkpoint format.

:class:`HubMixin` gives :class:`unmask.models.MaskedTransformer` and the learned policies the methods of
``huggingface_hub.ModelHubMixin``: ``save_pretrained(dir)`` writes ``model.safetensors`` + ``config.json`` (what
``unmask train-mdm`` / ``train-policy`` write) and a generated model card ``README.md`` (base MDM, task and its
options, training recipe, metrics); ``from_pretrained("OWNER/NAME" | dir, revision=...)`` reads a directory or a
hub snapshot through huggingface_hub's cache (offline with ``HF_HUB_OFFLINE=1`` when it is cached);
``push_to_hub("OWNER/NAME")`` uploads a ``save_pretrained`` folder.

Specs ``hf://OWNER/NAME[@REV][:key=value...]`` name such a repository wherever a policy (``--policies``) or a
built-in MDM (``--model``) is expected; ``hf:NAME`` (one colon) stays a ``transformers`` dLLM.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from unmask.core.checkpoint import CONFIG, atomic_write, load_json, save_checkpoint
from unmask.core.extras import require

HF_SCHEME = "hf://"
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
CARD = "README.md"


class HubMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` over :meth:`checkpoint_config` (each class
    says what its ``config.json`` holds, under its :attr:`checkpoint_section`) and :meth:`load_checkpoint`
    (each class reads its own back). Lives in :mod:`unmask.core` so that models and policies both use it
    without this module knowing either."""

    checkpoint_section: str = ""  # the config.json section that marks a checkpoint of this class ("model", "policy")
    checkpoint_kinds = {"model": "MaskedTransformer", "policy": "LearnedPolicy"}  # section -> class, for errors

    @classmethod
    def load_checkpoint(cls, directory: Path) -> Any:
        """Load the checkpoint in ``directory`` (its ``config.json`` has :attr:`checkpoint_section`)."""
        raise NotImplementedError

    def checkpoint_config(self) -> dict[str, Any]:
        """What ``config.json`` holds for this object."""
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write the checkpoint and its model card into ``save_directory``; returns it."""
        directory = Path(save_directory)
        config = self.checkpoint_config()
        save_checkpoint(directory, self, config)
        card = model_card(config)
        atomic_write(directory / CARD, lambda tmp: Path(tmp).write_text(card))
        return directory

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | None = None,
    ) -> Any:
        """Load from a local directory or the hub repository ``OWNER/NAME`` (at ``revision``)."""
        path = Path(name_or_path)
        if not (path / CONFIG).is_file():
            path = snapshot(str(name_or_path), revision, cache_dir, token)
        meta = load_json(path / CONFIG)
        if cls.checkpoint_section not in meta:
            held = next((name for section, name in cls.checkpoint_kinds.items() if section in meta), None)
            raise ValueError(
                f"{name_or_path} holds a {held}, not a {cls.__name__}"
                if held
                else f"{path / CONFIG} is neither an MDM nor a policy checkpoint (no 'model' / 'policy' section)"
            )
        return cls.load_checkpoint(path)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload with unmask",
    ) -> str:
        """Create ``repo_id`` if needed and upload this checkpoint and its card; returns the commit URL."""
        hub = require("huggingface_hub", "hub", "push_to_hub")
        check_repo_id(repo_id)
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return str(
                api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
            )


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.fullmatch(repo_id):
        raise ValueError(f"hub repository {repo_id!r} must be OWNER/NAME")


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """``hf://OWNER/NAME[@REV][:options]`` as (repo id, revision or None, options)."""
    body = spec.strip()[len(HF_SCHEME) :]
    repo, _, options = body.partition(":")
    repo, _, revision = repo.partition("@")
    check_repo_id(repo)
    return repo, revision or None, options


def snapshot(
    repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None, token: str | None = None
) -> Path:
    """The local directory of ``repo_id`` at ``revision``: huggingface_hub's cached snapshot, downloaded first
    when the hub is reachable and ``HF_HUB_OFFLINE`` is not set."""
    hub = require("huggingface_hub", "hub", f"loading {repo_id} from the Hugging Face Hub")
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    check_repo_id(repo_id)
    where = f"{repo_id}@{revision or 'main'}"
    try:
        return Path(hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token))
    except LocalEntryNotFoundError:
        cache = cache_dir or constants.HF_HUB_CACHE
        raise ValueError(
            f"cannot load {where}: the Hugging Face Hub is not reachable (or HF_HUB_OFFLINE is set) and "
            f"it is not in the local cache {cache}; connect once, or copy the snapshot there"
        ) from None
    except HfHubHTTPError as e:
        raise ValueError(f"cannot load {where} from the Hugging Face Hub: {str(e).splitlines()[0]}") from None


def resolve_hf_spec(spec: str) -> tuple[str, Path, str]:
    """(display name ``hf://OWNER/NAME[@REV]``, local snapshot directory, options) of a ``hf://`` spec."""
    repo, revision, options = parse_hf_spec(spec)
    name = f"{HF_SCHEME}{repo}" + (f"@{revision}" if revision else "")
    return name, snapshot(repo, revision), options


def model_card(config: dict[str, Any]) -> str:
    """A model card for a checkpoint's ``config.json``: what it is, base MDM, task, recipe and metrics."""
    policy = config.get("policy")
    train = config.get("train") or {}
    task = config.get("task") or train.get("task") or (config.get("model") or {}).get("task", "")
    task_options = (train.get("run") or train).get("task_options") or {}  # a policy's run section, an MDM's train
    if policy:
        mdm = config.get("mdm") or train.get("model") or ""
        title = f"{policy['kind']} unmasking policy for `{mdm}` on `{task}`"
        base = [f"base_model: {mdm[3:]}"] if mdm.startswith("hf:") and not mdm.startswith(HF_SCHEME) else []
        kind = "unmasking-policy"
        use = f"unmask eval --task {task} --model {mdm} --policies hf://OWNER/NAME"
    else:
        mdm = config.get("name", "")
        title = f"masked diffusion model `{mdm}` for `{task}`"
        base, kind = [], "masked-diffusion-model"
        use = f"unmask eval --task {task} --model hf://OWNER/NAME"
    metrics = {k: v for k, v in config.items() if k.startswith("eval_") or k in ("step", "parameters")}
    rows = [
        ("base MDM", f"`{mdm}`"),
        ("task", f"`{task}`"),
        ("task options", ", ".join(f"{k}={v}" for k, v in sorted(task_options.items())) or "defaults"),
    ]
    lines = [
        "---",
        "library_name: unmask",
        f"tags: [unmask, masked-diffusion, {kind}]",
        *base,
        "---",
        "",
        f"# {title}",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
    ]
    if metrics:
        lines += [
            "## Metrics",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())],
            "",
        ]
    if train:
        lines += ["## Training recipe", "", "```json", json.dumps(train, indent=2, sort_keys=True), "```", ""]
    lines += ["## Use", "", "```bash", "pip install 'unmask[hub]'", use, "```", ""]
    return "\n".join(lines)


__all__ = ["CARD", "HF_SCHEME", "HubMixin", "model_card", "parse_hf_spec", "resolve_hf_spec", "snapshot"]
