"""Blind priors: exact scores on hand-made record sets, bias detection, and the VSI-Bench scorer's MRA."""

import numpy as np
import pytest

from modeling_spa3r import vsibench
from modeling_spa3r.data.priors import blind_priors, cross_fitted_priors, format_prior_table, mra_matrix, question_slots
from modeling_spa3r.data.synthvsi import DIRECTION_EASY_TEMPLATE, SIZE_TEMPLATE


def _easy(i, answer_text, letter_of_answer):
    other = "right" if answer_text == "left" else "left"
    texts = [answer_text, other] if letter_of_answer == "A" else [other, answer_text]
    return {"id": i, "dataset": "t", "scene_name": f"s{i}", "question_type": "object_rel_direction_easy",
            "question": DIRECTION_EASY_TEMPLATE.format(stand="bed", face="door", query="tv"),
            "ground_truth": letter_of_answer, "options": [f"A. {texts[0]}", f"B. {texts[1]}"]}


def _size(i, category, value):
    return {"id": i, "dataset": "t", "scene_name": f"s{i}", "question_type": "object_size_estimation",
            "question": SIZE_TEMPLATE.format(category=category), "ground_truth": str(value), "options": None}


def _biased(offset, n):
    """'left' is always the answer (letters alternate); sizes are fixed per category."""
    easy = [_easy(offset + i, "left", "AB"[i % 2]) for i in range(n)]
    sizes = [_size(offset + n + i, ("chair", "bed")[i % 2], (90, 200)[i % 2]) for i in range(n)]
    return easy + sizes


def test_mra_matrix_equals_the_scorer():
    rng = np.random.default_rng(0)
    preds, targets = rng.uniform(0.1, 10, 30), rng.uniform(0.1, 10, 20)
    preds[:5] = targets[:5] * np.array([1.0, 1.05, 0.5, 1.5, 1.2])  # on and near tolerance edges
    expected = [[vsibench.mean_relative_accuracy(float(p), float(t)) for t in targets] for p in preds]
    assert np.array_equal(mra_matrix(preds, targets), np.array(expected))


def test_question_slots_follow_the_template():
    record = _easy(0, "left", "A")
    assert question_slots(record) == {"stand": "bed", "face": "door", "query": "tv"}
    assert question_slots(_size(1, "trash can", 40)) == {"category": "trash can"}
    assert question_slots({**record, "question": "Something else?"}) == {}


def test_text_priors_find_answer_text_and_category_bias():
    result = blind_priors(_biased(0, 40), _biased(1000, 20))
    easy, size = "object_rel_direction_easy", "object_size_estimation"
    assert result.per_type["chance"][easy] == 0.5
    assert result.per_type["frequent"][easy] == 1.0 and result.per_type["text"][easy] == 1.0
    # sizes: per-category constants are exact; the type mean 145 is off by 61 % / 27.5 % -> MRA 0 / 0.5
    assert result.per_type["text"][size] == 1.0 and result.text_family[size] in ("per category", "all slots")
    assert result.per_type["frequent"][size] == pytest.approx(0.25)
    # chance = expected MRA of a random train answer: half the time the right category's value
    assert result.per_type["chance"][size] == pytest.approx(0.5)
    assert result.counts == {easy: (40, 20), size: (40, 20)}
    assert result.tasks["text"]["overall"] == pytest.approx(1.0)  # (size 1.0 + easy alone) -> rel dir absent
    table = result.table()
    assert "| object_rel_direction_easy | 40 | 20 | 50.0 | 100.0 | 100.0 | +50.0 |" in table
    assert table == format_prior_table(result.per_type, result.tasks, result.text_family, result.counts)


def test_balanced_answers_leave_text_priors_at_chance():
    rng = np.random.default_rng(1)
    records = [_easy(i, ("left", "right")[int(rng.integers(2))], "AB"[int(rng.integers(2))]) for i in range(400)]
    result = blind_priors(records[:200], records[200:])
    assert abs(result.per_type["text"]["object_rel_direction_easy"] - 0.5) < 0.1
    crossed = cross_fitted_priors(records, folds=4)
    assert crossed.counts["object_rel_direction_easy"] == (300, 400)
    assert abs(crossed.per_type["text"]["object_rel_direction_easy"] - 0.5) < 0.08


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no question type has records in both"):
        blind_priors(_biased(0, 4)[:4], _biased(10, 4)[4:])
    with pytest.raises(ValueError, match="folds must be >= 2"):
        cross_fitted_priors(_biased(0, 4), folds=1)
