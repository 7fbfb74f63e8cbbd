"""The ``evaluate`` wrapper of the VSI-Bench scorer, loaded offline from its local folder."""

import evaluate
import pytest

from modeling_spa3r import vsibench
from modeling_spa3r.metrics import VSIBENCH_METRIC_PATH

ITEMS = [
    ("5.0", "5", "object_counting"),
    ("6", "5", "object_counting"),
    ("3.3 meters", "3.0", "object_abs_distance"),
    ("80cm", "80", "object_size_estimation"),
    ("about 20", "18.0", "room_size_estimation"),
    ("B. The chair", "B", "object_rel_distance"),
    ("A", "A", "object_rel_direction_easy"),
    ("C.)", "C", "object_rel_direction_medium"),
    ("c\n", "C", "object_rel_direction_hard"),
    ("(D)", "D", "route_planning"),
    ("  B", "B", "obj_appearance_order"),
]


@pytest.fixture(scope="module")
def metric(monkeypatch_module):
    return evaluate.load(VSIBENCH_METRIC_PATH)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield patch


def test_metric_matches_library(metric):
    predictions, references, types = map(list, zip(*ITEMS))
    result = metric.compute(predictions=predictions, references=references, question_types=types, return_item_scores=True)
    assert result["scores"] == [1.0, 0.6, 0.9, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    expected = vsibench.aggregate({"question_type": t, "score": s} for t, s in zip(types, result.pop("scores")))
    assert result == expected
    assert result["object_counting_MRA:.5:.95:.05"] == pytest.approx(0.8, abs=1e-12)
    assert result["object_rel_direction_accuracy"] == pytest.approx(2 / 3, abs=1e-12)
    assert result["overall"] == pytest.approx((0.8 + 0.9 + 0 + 0 + 1 + 2 / 3 + 0 + 0) / 8, abs=1e-12)


def test_metric_newer_parser_and_batches(metric):
    metric.add_batch(predictions=["80cm"], references=["80"], question_types=["object_size_estimation"])
    metric.add_batch(predictions=["about 20"], references=["18.0"], question_types=["room_size_estimation"])
    result = metric.compute(parser="lmms-eval-2026")
    assert result == {
        "object_size_estimation_MRA:.5:.95:.05": 1.0,
        "room_size_estimation_MRA:.5:.95:.05": 0.8,
        "overall": 0.9,
        "micro_average": 0.9,
    }


def test_metric_rejects_impossible_ground_truth(metric):
    with pytest.raises(ValueError, match=r"item 1: .*field 'ground_truth' must be a finite number > 0"):
        metric.compute(predictions=["1", "1"], references=["1", "0"], question_types=["object_counting"] * 2)
