"""AUP, Accuracy Under Parallelism (d3LLM, hao-ai-lab 2025; its ``aup_utils.get_aup``): one number for
a method's speed-accuracy curve that does not depend on the hardware.

A method gives points (rho_i, y_i): parallelism rho = tokens per forward (TPF: positions generated / NFE) and
accuracy y in percent. Sorted by rho, the points whose accuracy stays within ``y_min_offset`` points of the first
(lowest-parallelism) one's, y_i >= y_1 - 5, count, and

    AUP = rho_1 y_1 + sum_{i>=2} (rho_i - rho_{i-1}) (y_i W(y_i) + y_{i-1} W(y_{i-1})) / 2,
    W(y) = min(exp(-alpha (1 - y / y_max)), 1),

the area under the curve from 0, each accuracy weighted down by how far it falls below y_max, the best accuracy
of all methods compared (alpha = 3). unmask maps its runs onto it so:

* one evaluation row (``unmask eval``, a benchmark table) is a curve of one point: AUP = TPF x solved %, where
  TPF = the examples' generated positions over their forwards (a one-token-per-step policy: TPF 1, AUP = solved %);
* a frontier curve (``unmask frontier``: a method's knob swept) is the method's points, with y_max the best solved
  rate of every curve of the run.

The d3LLM code also refuses a curve whose last point falls more than 5 points below its first; here such points
are left out by the same filter instead, so every curve has an AUP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def quality_weight(y: float, y_max: float, alpha: float = 3.0) -> float:
    """W(y) = min(exp(-alpha (1 - y / y_max)), 1) (1 when y_max is 0: every accuracy is then 0)."""
    return 1.0 if y_max <= 0 else min(math.exp(-alpha * (1 - y / y_max)), 1.0)


def aup(
    rho: Sequence[float], y: Sequence[float], y_max: float | None = None, alpha: float = 3.0, y_min_offset: float = 5.0
) -> float:
    """AUP of the points (rho_i, y_i): parallelism (tokens per forward, > 0) and accuracy in percent [0, 100];
    ``y_max``: the best accuracy of all methods compared (default: this curve's). See the module docstring."""
    if len(rho) != len(y) or not len(rho):
        raise ValueError(
            f"AUP needs as many parallelism values as accuracies, at least one; got {len(rho)} and {len(y)}"
        )
    if not all(math.isfinite(r) and r > 0 for r in rho):
        raise ValueError(f"AUP: parallelism (tokens per forward) must be > 0, got {list(rho)}")
    if not all(0 <= v <= 100 for v in y):
        raise ValueError(f"AUP: accuracies must be percentages in [0, 100] (solved rate x 100), got {list(y)}")
    points = sorted(zip(rho, y))
    floor = points[0][1] - y_min_offset
    points = [(r, v) for r, v in points if v >= floor]
    top = max(v for _, v in points) if y_max is None else y_max
    total = points[0][0] * points[0][1]
    for (r0, v0), (r1, v1) in zip(points, points[1:]):
        total += (r1 - r0) * (v1 * quality_weight(v1, top, alpha) + v0 * quality_weight(v0, top, alpha)) / 2
    return total
