"""The README, the docs/ site and the model cards stay true: their tables equal what benchmarks/render_docs.py
generates from the committed results, the strict mkdocs build passes (a broken link fails), every ``unmask``
command in a bash block parses with the CLI's own parser, and the cheap ones run on a few examples."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from unmask.cli.main import UsageError, build_parser, main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import render_docs  # noqa: E402
from common import add_rows  # noqa: E402

PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("**/*.md")),
    *sorted((REPO / "src" / "unmask" / "assets").glob("*/*/README.md")),
]
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """The ``unmask ...`` commands of a page's bash blocks: (the command as written, its arguments)."""
    out = []
    for block in BASH_BLOCK.findall(path.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for i, w in enumerate(words):  # `.venv/bin/unmask demo` and `... && .venv/bin/unmask demo` count too
                if Path(w).name == "unmask" and (i == 0 or words[i - 1] == "&&"):
                    end = words.index("&&", i) if "&&" in words[i:] else len(words)
                    out.append((line.strip(), [w for w in words[i + 1 : end] if w != "..."]))  # "...": flags left out
    return out


ALL = [(path, line, argv) for path in PAGES for line, argv in commands(path)]
PARSER = build_parser()


def test_pages_have_commands():
    assert len(ALL) >= 20 and {p.name for p, _, _ in ALL} >= {"README.md", "upo.md", "models.md"}


def test_generated_regions_and_cards_are_current():
    stale = [
        str(p.relative_to(REPO))
        for p, text in render_docs.outputs().items()
        if not p.is_file() or p.read_text() != text
    ]
    assert not stale, f"hand-edited or stale: {stale}; run .venv/bin/python benchmarks/render_docs.py"


def test_unknown_generated_region_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown generated region 'nope'.*headline"):
        render_docs.fill(tmp_path / "x.md", "<!-- generated:nope -->\n<!-- /generated -->\n", render_docs.blocks())


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    test_block = readme.split("Tests (", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert test_block.strip() in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("path,line,argv", ALL, ids=[f"{p.name}:{' '.join(a[:3])}" for p, _, a in ALL])
def test_documented_command_parses(path, line, argv, capsys):
    try:
        PARSER.parse_args(argv)
    except (SystemExit, UsageError) as e:
        pytest.fail(f"{path.relative_to(REPO)}: `{line}` does not parse: {e} {capsys.readouterr().err}")


def cheap(argv: list[str]) -> bool:
    """An eval / show-order command on a built-in model and generated examples (no run directory, file or hub)."""
    return argv[0] in ("eval", "show-order") and not any(
        part in w for w in argv for part in ("runs/", "hf:", "../", "path/")
    )


def shrunk(argv: list[str], tmp: Path) -> list[str]:
    """The command on 4 examples, pass@2 at most, writing its files under ``tmp``."""
    out, it = [], iter(argv)
    for w in it:
        if w in ("--num", "--pass-at", "--json", "--plot", "--out"):
            value = next(it)
            value = {"--num": "4", "--pass-at": "2"}.get(w, str(tmp / Path(value).name))
            out += [w, value]
        else:
            out.append(w)
    return out if "--num" in out else out + ["--num", "4"]


CHEAP = [(p, line, argv) for p, line, argv in ALL if cheap(argv)]


@pytest.mark.slow
@pytest.mark.parametrize("path,line,argv", CHEAP, ids=[f"{p.name}:{' '.join(a[:3])}" for p, _, a in CHEAP])
def test_cheap_documented_command_runs(path, line, argv, tmp_path):
    assert main(shrunk(argv, tmp_path)) == 0, f"{path.relative_to(REPO)}: `{line}` failed"


@pytest.mark.slow
def test_docs_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed (pip install -e ".[docs]")')
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


RESULT_FILES = sorted(p for p in (REPO / "benchmarks" / "results").glob("**/*.json") if "checkpoints" not in p.parts)


@pytest.mark.parametrize(
    "path", RESULT_FILES, ids=[str(p.relative_to(REPO / "benchmarks" / "results")) for p in RESULT_FILES]
)
def test_results_record_their_provenance(path):
    """Each results JSON says what wrote it (``benchmarks/common.py run_info``): command, commit, date, machine;
    entries backfilled from git log say so."""
    runs = json.loads(path.read_text()).get("provenance")
    assert runs, f"{path.name}: no 'provenance' (store [run_info(command)] from benchmarks/common.py)"
    for run in runs:
        assert {"command", "commit", "date", "machine"} <= set(run), f"{path.name}: {sorted(run)}"
        assert run["commit"] and run["date"], f"{path.name}: {run}"
        assert (run["command"] and run["machine"]) or "backfilled" in run, f"{path.name}: {run}"


def test_appended_rows_supersede_the_same_policys_earlier_rows():
    """benchmarks' --append: a re-measured policy replaces its row in place; other rows and new ones stay."""
    old = [
        {"data": "a", "policy": "p", "v": 1},
        {"data": "a", "policy": "q", "v": 2},
        {"data": "b", "policy": "p", "v": 3},
    ]
    new = [{"data": "a", "policy": "p", "v": 9}, {"data": "c", "policy": "p", "v": 4}]
    assert [r["v"] for r in add_rows(old, new, ("data", "policy"))] == [9, 2, 3, 4]
