"""AUP, d3LLM's Accuracy Under Parallelism (unmask.evaluation.metrics), on hand-computed curves."""

import math

import pytest

from unmask.evaluation.metrics import aup, quality_weight


def test_one_point_is_parallelism_times_accuracy():
    assert aup([2.0], [50.0]) == pytest.approx(100.0)
    assert aup([1.0], [47.8], y_max=90.0) == pytest.approx(47.8)  # the first point is never weighted


def test_the_area_weights_each_accuracy_by_how_far_it_falls_below_the_best():
    assert quality_weight(80, 80) == 1.0 and quality_weight(90, 80) == 1.0  # capped at 1
    assert quality_weight(78, 80) == pytest.approx(math.exp(-0.075))
    # 1 x 80 + (3 - 1) x (78 W(78) + 80 W(80)) / 2 = 80 + 72.364 + 80
    assert aup([3.0, 1.0], [78.0, 80.0]) == pytest.approx(232.3640, abs=1e-4)
    assert aup([1.0, 3.0], [78.0, 80.0], y_max=100.0) == pytest.approx(
        78 + (78 * math.exp(-3 * 0.22) + 80 * math.exp(-3 * 0.2))
    )


def test_points_more_than_five_below_the_first_are_left_out():
    kept = aup([1.0, 4.0], [90.0, 88.0])
    assert aup([1.0, 2.0, 4.0], [90.0, 84.0, 88.0]) == pytest.approx(kept)  # 84 < 90 - 5
    assert aup([1.0, 2.0], [90.0, 85.0]) > 90.0  # 85 = 90 - 5 stays


@pytest.mark.parametrize(
    "rho, y, message",
    [
        ([], [], "at least one"),
        ([1.0, 2.0], [50.0], "as many parallelism values"),
        ([0.0], [50.0], "must be > 0"),
        ([1.0], [150.0], r"percentages in \[0, 100\]"),
    ],
)
def test_bad_points_are_explained(rho, y, message):
    with pytest.raises(ValueError, match=message):
        aup(rho, y)
