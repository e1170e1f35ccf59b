"""Conformance with the upstream samplers: settings matched / settings run, per reference.

Command (the figures in benchmarks/results/conformance.json):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conformance.py

Each setting decodes the same prompts with unmask's engine (bit-exact mode, ``suppress_mask_token`` off) and
with the upstream loop from ../shared/reference on the same tiny random network, and counts it matched when
the tokens and every row's forward count are equal. The grid (tests/conformance_cases.py, also run by
tests/engine/test_conformance.py): gen_length 16/32, steps G, G/2, G/4, block G and 8, temperature 0 and 0.7, batch 1
and 3 (left-padded), every remasking / alg value, cfg on and off, LLaDA's EOS options and Dream's top-p / top-k.
"fast_dllm_batched" decodes the 3 rows of a padded batch together against each row's own upstream run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import command_line, run_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import conformance_cases as cc  # noqa: E402

from unmask.core.checkpoint import save_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/conformance.json", help="results JSON")
    args = parser.parse_args()
    if not cc.reference_available():
        raise SystemExit(f"the reference code {cc.REFERENCE} is absent")
    rows, failures = [], []
    suites = {
        "llada_generate": (cc.grid("llada"), cc.check),
        "fast_dllm": ([c for c in cc.grid("fast_dllm") if c.batch == 1], cc.check),
        "fast_dllm_batched": (
            [c for c in cc.grid("fast_dllm") if c.batch == 3 and c.temperature == 0],
            cc.batched_fast_dllm_matches,
        ),
        "dream_diffusion_generate": (cc.grid("dream"), cc.check),
    }
    print(f"{'reference':<26} {'matched':>8} {'run':>6}")
    for name, (cases, check) in suites.items():
        matched = 0
        for case in cases:
            same, detail = check(case)
            matched += same
            if not same:
                failures.append({"reference": name, "setting": case.name, "detail": detail})
        rows.append({"reference": name, "settings_matched": matched, "settings_run": len(cases)})
        print(f"{name:<26} {matched:>8} {len(cases):>6}")
    for f in failures:
        print(f"MISMATCH {f['setting']}: {f['detail']}")
    save_json(
        args.out,
        {
            "provenance": [run_info(command_line("benchmarks/conformance.py", args))],
            "results": rows,
            "mismatches": failures,
        },
    )


if __name__ == "__main__":
    main()
