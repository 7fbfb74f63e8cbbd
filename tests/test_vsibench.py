"""Tests of the VSI-Bench scorer (``shared/spec/vsibench.md``), one group per spec section."""

import math

import numpy as np
import pytest

from modeling_spa3r import vsibench
from modeling_spa3r.vsibench import aggregate, build_prompt, extract_number_2026, format_table, score

REL_DIST = ["A. sink", "B. chair", "C. door", "D. tv"]
ROUTE = [
    "A. Turn Left, Turn Right",
    "B. Turn Back, Turn Left",
    "C. Turn Right, Turn Right",
    "D. Turn Left, Turn Left",
]
HARD = ["A. front-left", "B. back-right", "C. back-left", "D. front-right"]
MEDIUM = ["A. back", "B. left", "C. right"]
EASY = ["A. left", "B. right"]
ORDER = [
    "A. chair, table, tv, sofa",
    "B. table, chair, sofa, tv",
    "C. sofa, tv, chair, table",
    "D. tv, sofa, table, chair",
]


def official_mra(pred, target):
    """The official numpy formula, used as an independent reference for the threshold behaviour."""
    num_pts = (0.95 - 0.5) / 0.05 + 2
    conf = np.linspace(0.5, 0.95, int(num_pts))
    return float((abs(pred - target) / target <= 1 - conf).mean())


# --- §2 question types --------------------------------------------------------------------------


def test_question_type_sets():
    assert len(vsibench.QUESTION_TYPES) == 10
    assert set(vsibench.NA_QUESTION_TYPES) == {
        "object_counting",
        "object_abs_distance",
        "object_size_estimation",
        "room_size_estimation",
    }
    assert vsibench.task_key("object_rel_direction_easy") == "object_rel_direction_accuracy"
    assert vsibench.task_key("object_counting") == "object_counting_MRA:.5:.95:.05"
    assert vsibench.task_key("route_planning") == "route_planning_accuracy"
    assert len(vsibench.TASK_KEYS) == 8


def test_unknown_question_type_is_an_error():
    with pytest.raises(ValueError, match="unknown question_type 'object_rel_direction'"):
        score("A", "A", "object_rel_direction")
    with pytest.raises(ValueError, match="unknown question_type"):
        build_prompt("q", "counting")
    with pytest.raises(ValueError, match="unknown question_type 'x'"):
        aggregate([{"question_type": "x", "score": 1.0}])


# --- §3 prompt -----------------------------------------------------------------------------------


def test_na_prompt_default():
    assert build_prompt("How many chairs are in this room?", "object_counting") == (
        "These are frames of a video.\nHow many chairs are in this room?\n"
        "Please answer the question using a single word or phrase."
    )


def test_mca_prompt_default_keeps_options_verbatim_and_in_order():
    assert build_prompt("Which is closest to the bed?", "object_rel_distance", REL_DIST) == (
        "These are frames of a video.\nWhich is closest to the bed?\nOptions:\n"
        "A. sink\nB. chair\nC. door\nD. tv\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert build_prompt("Q?", "object_rel_direction_easy", ("B. right", "A. left")) == (
        "These are frames of a video.\nQ?\nOptions:\nB. right\nA. left\n"
        "Answer with the option's letter from the given choices directly."
    )


@pytest.mark.parametrize("profile", ["gpt4v", "gemini_api"])
def test_api_profiles_keep_the_typo(profile):
    assert build_prompt("How big?", "room_size_estimation", profile=profile) == (
        "These are frames of a video.\nHow big?\nDo not response anything other than a single number!"
    )
    assert build_prompt("Q?", "route_planning", MEDIUM, profile=profile) == (
        "These are frames of a video.\nQ?\nOptions:\nA. back\nB. left\nC. right\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_prompt_overrides_and_empty_fallback():
    assert build_prompt("Q?", "object_counting", pre_prompt="", na_post_prompt="") == (
        "These are frames of a video.\nQ?\nPlease answer the question using a single word or phrase."
    )
    assert build_prompt("Q?", "object_counting", pre_prompt="PRE", na_post_prompt="POST") == "PRE\nQ?\nPOST"
    assert build_prompt("Q?", "route_planning", ["A. x"], mca_post_prompt="") == (
        "These are frames of a video.\nQ?\nOptions:\nA. x\nAnswer with the option's letter from the given choices directly."
    )


def test_prompt_bad_input():
    with pytest.raises(ValueError, match="needs a non-empty list of option strings"):
        build_prompt("Q?", "route_planning")
    with pytest.raises(ValueError, match="needs a non-empty list of option strings"):
        build_prompt("Q?", "route_planning", [])
    with pytest.raises(ValueError, match="takes no options"):
        build_prompt("Q?", "object_counting", ["A. 1"])
    with pytest.raises(ValueError, match="unknown prompt profile 'gpt5'"):
        build_prompt("Q?", "object_counting", profile="gpt5")
    assert build_prompt("Q?", "object_counting", []) == build_prompt("Q?", "object_counting")


# --- §4 multiple choice --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, token, expected",
    [
        ("B", "B", 1.0),
        ("b", "b", 1.0),
        ("B.", "B", 1.0),
        ("B...", "B", 1.0),
        ("B\n", "B", 1.0),
        ("\tB\n", "B", 1.0),
        ("B. The chair", "B", 1.0),
        ("B.\n", "B.", 0.0),  # trailing "." is removed before whitespace is stripped
        ("B\tchair", "B\tchair", 0.0),  # tabs are not separators
        ("B\nchair", "B\nchair", 0.0),  # nor are newlines
        ("  B", "", 0.0),  # a leading space gives an empty first token
        (" B", "", 0.0),
        ("", "", 0.0),
        ("(B)", "(B)", 0.0),
        ("B)", "B)", 0.0),
        ("Answer: B", "Answer:", 0.0),
        ("chair", "chair", 0.0),
        ("B.)", "B.)", 0.0),
        ("BB", "BB", 0.0),
        ("B\u3000", "B", 1.0),  # any Unicode whitespace is stripped in step 3
    ],
)
def test_mca_reduction_and_accuracy(prediction, token, expected):
    assert vsibench.reduce_prediction(prediction) == token
    assert score(prediction, "B", "object_rel_distance", REL_DIST) == expected
    assert score(prediction, "B", "object_rel_distance") == expected


def test_mca_ground_truth_is_lower_cased_too():
    assert score("B", "b", "route_planning") == 1.0


def test_mca_parser_choice_does_not_change_mca():
    for prediction in ["B. The chair", "(B)", "two"]:
        assert score(prediction, "B", "route_planning", parser="lmms-eval-2026") == score(
            prediction, "B", "route_planning"
        )


def test_mca_bad_ground_truth():
    with pytest.raises(ValueError, match=r"question id 7 \(route_planning\): field 'ground_truth' 'E' is not one"):
        score("E", "E", "route_planning", ROUTE, question_id=7)
    with pytest.raises(ValueError, match="field 'ground_truth' must be an option letter"):
        score("A", "", "route_planning")
    with pytest.raises(ValueError, match="field 'ground_truth' must be an option letter"):
        score("A", None, "route_planning")


def test_prediction_must_be_text():
    with pytest.raises(TypeError, match="prediction must be a str, got NoneType"):
        score(None, "B", "route_planning")
    with pytest.raises(TypeError, match="prediction must be a str, got int"):
        score(5, "5", "object_counting")


def test_unknown_parser():
    with pytest.raises(ValueError, match="unknown parser 'lmms-eval'"):
        score("5", "5", "object_counting", parser="lmms-eval")


# --- §5.1 official numerical parser ---------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, value",
    [
        ("5", 5.0),
        ("5.0", 5.0),
        ("3.", 3.0),
        ("3...", 3.0),
        ("+4", 4.0),
        ("2e1", 20.0),
        ("2E1", 20.0),
        ("1_5", 15.0),
        (".5", 0.5),
        ("\u0663", 3.0),  # ARABIC-INDIC DIGIT THREE
        ("\uff17", 7.0),  # FULLWIDTH DIGIT SEVEN
        ("5 meters", 5.0),
        ("5\n", 5.0),
        ("5.\n", 5.0),  # reduced to "5." which float() accepts
        ("nan", math.nan),
        ("NaN", math.nan),
        ("inf", math.inf),
        ("-Infinity", -math.inf),
        ("80cm", None),
        ("1,000", None),
        ("~5", None),
        ("1/2", None),
        ("five", None),
        ("1__5", None),
        ("_15", None),
        ("5\tm", None),
        (" 5", None),
        ("", None),
        ("about 20", None),
    ],
)
def test_official_number_parsing(prediction, value):
    parsed = vsibench.parse_number(vsibench.reduce_prediction(prediction))
    if value is None:
        assert parsed is None
    elif math.isnan(value):
        assert math.isnan(parsed)
    else:
        assert parsed == value


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("5", 1.0),
        ("5 chairs", 1.0),
        ("5.0000", 1.0),
        ("nan", 0.0),
        ("inf", 0.0),
        ("-inf", 0.0),
        ("five", 0.0),
        ("-5", 0.0),
        ("5cm", 0.0),
        (" 5", 0.0),
        ("4", 0.6),  # r = 0.2: the float edge again
        ("3", 0.3),
        ("\u0665", 1.0),
    ],
)
def test_official_numerical_scores(prediction, expected):
    assert score(prediction, "5", "object_counting") == expected


# --- §5.2 ground truth ----------------------------------------------------------------------------


@pytest.mark.parametrize("ground_truth", ["0", "0.0", "-3", "-0.5", "abc", "", "nan", "inf", "-inf", "1e400", 0, -1.5, None])
def test_impossible_ground_truth_is_rejected_with_id_and_field(ground_truth):
    with pytest.raises(ValueError, match=r"question id 42 \(object_abs_distance\): field 'ground_truth'"):
        score("3", ground_truth, "object_abs_distance", question_id=42)


def test_ground_truth_accepts_numbers_and_float_syntax():
    assert score("2.5", 2.5, "object_abs_distance") == 1.0
    assert score("20", "2e1", "object_size_estimation") == 1.0
    assert score("3", " 3.0 ", "object_counting") == 1.0
    with pytest.raises(ValueError, match="field 'ground_truth' must be a number"):
        score("1", True, "object_counting")


# --- §5.3 optional lmms-eval-2026 parser ----------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, value",
    [
        ("four", 4.0),
        ("around 75 cm", 75.0),
        ("3.2m", 3.2),
        ("forty-two", 42.0),
        ("two hundred and five", 205.0),
        ("3e2", 3.0),
        ("2,500", 2.0),
        ("seventeen or 18", 17.0),
        ("Four", 4.0),
        ("  12  ", 12.0),
        ("-4.5 m", -4.5),
        ("1.", 1.0),  # "." needs digits after it
        ("a hundred", 100.0),
        ("two thousand three hundred and one", 2301.0),
        ("thousand", 1000.0),
        ("zero", 0.0),
        ("one apple, room 2", 1.0),
        ("room 2, one apple", 2.0),
        ("twenty one and a half", 21.0),  # "a" ends the run
        ("and five", 5.0),  # "and" does not start a run
        ("no idea", None),
        ("", None),
        ("   ", None),
        ("\u0663", 3.0),
    ],
)
def test_lmms_eval_2026_parser(prediction, value):
    assert extract_number_2026(prediction) == value


# --- §6 MRA ---------------------------------------------------------------------------------------


def test_tolerances_are_the_official_doubles():
    assert vsibench.MRA_TOLERANCES == (
        0.5,
        0.44999999999999996,
        0.4,
        0.35,
        0.30000000000000004,
        0.25,
        0.19999999999999996,
        0.15000000000000002,
        0.10000000000000009,
        0.050000000000000044,
    )
    assert list(vsibench.MRA_TOLERANCES) == list(1 - np.linspace(0.5, 0.95, 10))


@pytest.mark.parametrize(
    "prediction, target, expected",
    [
        (5.0, 5.0, 1.0),
        (6.0, 5.0, 0.6),  # r = 0.2 > 0.19999999999999996 (exact decimals would give 0.7)
        (12.0, 10.0, 0.6),  # r = 0.2 again
        (8.0, 10.0, 0.6),  # r = 0.2 from below
        (29.0, 20.0, 0.1),  # r = 0.45 > 0.44999999999999996 (exact decimals: 0.2)
        (11.0, 20.0, 0.1),  # r = 0.45 from below
        (6.0, 4.0, 0.1),  # r = 0.5 == 0.5 passes ("<=")
        (2.0, 4.0, 0.1),
        (6.000000000000001, 4.0, 0.0),  # just above 0.5
        (14.0, 10.0, 0.3),  # r = 0.4 == 0.4
        (27.0, 20.0, 0.4),  # r = 0.35 == 0.35
        (13.0, 10.0, 0.5),  # r = 0.3 <= 0.30000000000000004
        (5.0, 4.0, 0.6),  # r = 0.25 == 0.25
        (23.0, 20.0, 0.8),  # r = 0.15 <= 0.15000000000000002
        (11.0, 10.0, 0.9),  # r = 0.1 <= 0.10000000000000009
        (3.3, 3.0, 0.9),  # r = 0.0999...94
        (21.0, 20.0, 1.0),  # r = 0.05 <= 0.050000000000000044
        (1.05, 1.0, 1.0),  # r = 0.050000000000000044 exactly
        (105.0, 100.0, 1.0),  # r = 0.05
        (105.00000000000001, 100.0, 0.9),  # next double up: r = 0.05000000000000014 > 0.050000000000000044
        (0.0, 5.0, 0.0),
        (-5.0, 5.0, 0.0),
        (100.0, 5.0, 0.0),
        (math.nan, 5.0, 0.0),
        (math.inf, 5.0, 0.0),
        (None, 5.0, 0.0),
    ],
)
def test_mra_threshold_edges(prediction, target, expected):
    assert vsibench.mean_relative_accuracy(prediction, target) == expected
    if prediction is not None and math.isfinite(prediction):
        assert official_mra(prediction, target) == expected


def test_mra_matches_official_formula_on_a_grid():
    for target in [0.3, 1.0, 3.0, 4.0, 7.5, 10.0, 18.0, 20.0, 80.0, 150.0]:
        for k in range(0, 161):
            prediction = target * k / 80
            assert vsibench.mean_relative_accuracy(prediction, target) == official_mra(prediction, target)


def test_mra_rejects_impossible_target():
    with pytest.raises(ValueError, match="finite number > 0"):
        vsibench.mean_relative_accuracy(1.0, 0.0)


# --- §7 worked examples ---------------------------------------------------------------------------

WORKED_EXAMPLES = [
    # (#, question_type, options, GT, raw prediction, official score, lmms-eval-2026 score)
    (1, "object_rel_distance", REL_DIST, "B", "B. The chair", 1.0, 1.0),
    (2, "route_planning", ROUTE, "D", "(D)", 0.0, 0.0),
    (3, "object_rel_direction_hard", HARD, "C", "c\n", 1.0, 1.0),
    (4, "object_rel_direction_medium", MEDIUM, "C", "C.)", 0.0, 0.0),
    (5, "obj_appearance_order", ORDER, "B", "  B", 0.0, 0.0),
    (6, "object_counting", None, "5", "6", 0.6, 0.6),
    (7, "object_abs_distance", None, "3.0", "3.3 meters", 0.9, 0.9),
    (8, "object_size_estimation", None, "80", "80cm", 0.0, 1.0),
    (9, "room_size_estimation", None, "18.0", "about 20", 0.0, 0.8),
    (10, "object_abs_distance", None, "4.0", "6.0", 0.1, 0.1),
]


@pytest.mark.parametrize("number, question_type, options, gt, prediction, official, newer", WORKED_EXAMPLES)
def test_worked_examples(number, question_type, options, gt, prediction, official, newer):
    assert score(prediction, gt, question_type, options) == official
    assert score(prediction, gt, question_type, options, parser="thinking-in-space") == official
    assert score(prediction, gt, question_type, options, parser="lmms-eval-2026") == newer


def _aggregation_example_records():
    items = [
        ("object_counting", None, "5", "5.0"),
        ("object_counting", None, "5", "6"),  # #6
        ("object_abs_distance", None, "3.0", "3.3 meters"),  # #7
        ("object_size_estimation", None, "80", "80cm"),  # #8
        ("object_size_estimation", None, "150", "135"),
        ("room_size_estimation", None, "40", "44."),
        ("object_rel_distance", REL_DIST, "B", "B. The chair"),  # #1
        ("object_rel_distance", REL_DIST, "A", "D"),
        ("object_rel_direction_easy", EASY, "A", "A"),
        ("object_rel_direction_easy", EASY, "B", "b."),
        ("object_rel_direction_medium", MEDIUM, "C", "C.)"),  # #4
        ("object_rel_direction_hard", HARD, "C", "c\n"),  # #3
        ("object_rel_direction_hard", HARD, "A", "B"),
        ("object_rel_direction_hard", HARD, "D", "front-right"),
        ("object_rel_direction_hard", HARD, "B", "(B)"),
        ("route_planning", ROUTE, "D", "(D)"),  # #2
        ("obj_appearance_order", ORDER, "A", "A"),
        ("obj_appearance_order", ORDER, "C", "C"),
        ("obj_appearance_order", ORDER, "B", "  B"),  # #5
    ]
    return [
        {"question_type": t, "score": score(p, gt, t, options), "ground_truth": gt, "prediction": p}
        for t, options, gt, p in items
    ]


def test_aggregation_worked_example():
    records = _aggregation_example_records()
    assert [r["score"] for r in records] == [
        1.0, 0.6, 0.9, 0.0, 0.9, 0.9, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0,
    ]  # fmt: skip
    result = aggregate(records)
    assert list(result) == [*vsibench.TASK_KEYS, "overall", "micro_average"]
    expected = {
        "object_counting_MRA:.5:.95:.05": 0.8,
        "object_abs_distance_MRA:.5:.95:.05": 0.9,
        "object_size_estimation_MRA:.5:.95:.05": 0.45,
        "room_size_estimation_MRA:.5:.95:.05": 0.9,
        "object_rel_distance_accuracy": 0.5,
        "object_rel_direction_accuracy": 1.25 / 3,
        "route_planning_accuracy": 0.0,
        "obj_appearance_order_accuracy": 2 / 3,
        "overall": (0.8 + 0.9 + 0.45 + 0.9 + 0.5 + 1.25 / 3 + 0.0 + 2 / 3) / 8,
        "micro_average": 10.3 / 19,
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key
    assert round(100 * result["object_rel_direction_accuracy"], 3) == 41.667
    assert round(100 * result["obj_appearance_order_accuracy"], 3) == 66.667
    assert round(100 * result["overall"], 3) == 57.917
    assert round(100 * result["micro_average"], 2) == 54.21


def test_rel_direction_is_mean_of_subtype_means_not_pooled():
    records = [
        {"question_type": "object_rel_direction_easy", "score": 1.0},
        {"question_type": "object_rel_direction_medium", "score": 0.0},
        *[{"question_type": "object_rel_direction_hard", "score": 1.0}] * 8,
    ]
    result = aggregate(records)
    assert result["object_rel_direction_accuracy"] == pytest.approx(2 / 3, abs=1e-12)
    assert result["micro_average"] == pytest.approx(0.9, abs=1e-12)
    assert result["overall"] == result["object_rel_direction_accuracy"]


def test_overall_is_macro_over_present_tasks():
    records = [{"question_type": "object_counting", "score": 1.0}] * 9 + [{"question_type": "route_planning", "score": 0.0}]
    result = aggregate(records)
    assert result == {
        "object_counting_MRA:.5:.95:.05": 1.0,
        "route_planning_accuracy": 0.0,
        "overall": 0.5,
        "micro_average": 0.9,
    }


def test_partial_rel_direction_is_an_error():
    with pytest.raises(ValueError, match="missing: object_rel_direction_medium, object_rel_direction_hard"):
        aggregate([{"question_type": "object_rel_direction_easy", "score": 1.0}])


def test_aggregate_bad_records():
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    with pytest.raises(ValueError, match="record 1 must be a mapping with 'question_type' and 'score'"):
        aggregate([{"question_type": "object_counting", "score": 1.0}, {"question_type": "object_counting"}])
    with pytest.raises(ValueError, match=r"record 0 \(object_counting\): 'score' must be a number in \[0, 1\], got 1.5"):
        aggregate([{"question_type": "object_counting", "score": 1.5}])
    with pytest.raises(ValueError, match="'score' must be a number"):
        aggregate([{"question_type": "object_counting", "score": None}])


def test_format_table():
    table = format_table(aggregate(_aggregation_example_records()))
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == [
        " Overall ", " Obj. Count ", " Abs. Dist. ", " Obj. Size ", " Room Size ", " Rel. Dist. ",
        " Rel. Dir. ", " Route Plan ", " Appr. Order ",
    ]  # fmt: skip
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [
        "57.92", "80.00", "90.00", "45.00", "90.00", "50.00", "41.67", "0.00", "66.67",
    ]  # fmt: skip
    assert lines[3] == "micro average over questions (not the official metric): 54.21"
    partial = format_table({"route_planning_accuracy": 0.25, "overall": 0.25})
    assert [c.strip() for c in partial.splitlines()[2].split("|")[1:-1]] == ["25.00", *["-"] * 6, "25.00", "-"]
