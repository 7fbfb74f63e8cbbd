"""VSI-Bench scoring, aggregation and prompt building that reproduce the official evaluation.

The official protocol is the lmms-eval task ``vsibench`` of ``vision-x-nyu/thinking-in-space``
(identical item scores in upstream ``EvolvingLMMs-Lab/lmms-eval`` until mid-2026). Every rule below
follows ``shared/spec/vsibench.md``:

* multiple-choice answers (MCA) are reduced to their first space-separated token, trailing dots
  are removed, whitespace is stripped, and the token is compared case-insensitively with the
  ground-truth letter (:func:`reduce_prediction`, :func:`score`);
* numerical answers (NA) are reduced the same way and converted with Python's ``float()``; the
  score is the Mean Relative Accuracy over ten tolerances (:func:`mean_relative_accuracy`);
* an optional parser (``parser="lmms-eval-2026"``) extracts the first number or English number
  phrase from the whole answer instead (:func:`extract_number_2026`);
* task scores are per-type means, the three relative-direction subtypes are merged by the plain
  mean of their means, and ``overall`` is the macro average over tasks (:func:`aggregate`).

Numerical rows whose ground truth is not a finite number > 0 are rejected with ``ValueError``
instead of reproducing the official code's crash or silent full marks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "MCA_QUESTION_TYPES",
    "NA_QUESTION_TYPES",
    "QUESTION_TYPES",
    "REL_DIRECTION_TYPES",
    "TASK_KEYS",
    "TASK_DISPLAY_NAMES",
    "MRA_TOLERANCES",
    "PROMPT_PROFILES",
    "PARSERS",
    "DEFAULT_PARSER",
    "MICRO_AVERAGE_KEY",
    "build_prompt",
    "reduce_prediction",
    "parse_number",
    "extract_number_2026",
    "parse_ground_truth",
    "mean_relative_accuracy",
    "score",
    "aggregate",
    "task_key",
    "format_table",
]

NA_QUESTION_TYPES = (
    "object_counting",
    "object_abs_distance",
    "object_size_estimation",
    "room_size_estimation",
)
"""Numerical-answer question types, scored by MRA."""

REL_DIRECTION_TYPES = (
    "object_rel_direction_easy",
    "object_rel_direction_medium",
    "object_rel_direction_hard",
)
"""The three relative-direction subtypes, reported as the single task ``object_rel_direction``."""

MCA_QUESTION_TYPES = (
    "object_rel_distance",
    *REL_DIRECTION_TYPES,
    "route_planning",
    "obj_appearance_order",
)
"""Multiple-choice question types, scored by exact-match accuracy."""

QUESTION_TYPES = NA_QUESTION_TYPES + MCA_QUESTION_TYPES
"""All ten valid ``question_type`` labels."""

_MRA_SUFFIX = "_MRA:.5:.95:.05"
_ACC_SUFFIX = "_accuracy"

TASK_KEYS = (
    "object_counting" + _MRA_SUFFIX,
    "object_abs_distance" + _MRA_SUFFIX,
    "object_size_estimation" + _MRA_SUFFIX,
    "room_size_estimation" + _MRA_SUFFIX,
    "object_rel_distance" + _ACC_SUFFIX,
    "object_rel_direction" + _ACC_SUFFIX,
    "route_planning" + _ACC_SUFFIX,
    "obj_appearance_order" + _ACC_SUFFIX,
)
"""Official result keys of the eight reported tasks, in the paper's column order."""

TASK_DISPLAY_NAMES = dict(
    zip(
        TASK_KEYS,
        ("Obj. Count", "Abs. Dist.", "Obj. Size", "Room Size", "Rel. Dist.", "Rel. Dir.", "Route Plan", "Appr. Order"),
    )
)
"""Column titles used in the paper's tables, keyed by official result key."""

MICRO_AVERAGE_KEY = "micro_average"
"""Key of the mean over all questions (not the official number; the Debiased paper reports it)."""

MRA_TOLERANCES = tuple(
    float.fromhex(h)
    for h in (
        "0x1p-1",
        "0x1.cccccccccccccp-2",
        "0x1.999999999999ap-2",
        "0x1.6666666666666p-2",
        "0x1.3333333333334p-2",
        "0x1p-2",
        "0x1.9999999999998p-3",
        "0x1.3333333333334p-3",
        "0x1.99999999999a0p-4",
        "0x1.99999999999a0p-5",
    )
)
"""The ten MRA tolerances ``1 - linspace(0.5, 0.95, 10)`` exactly as the official code computes them."""

_DEFAULT_PRE = "These are frames of a video."
_DEFAULT_MCA_POST = "Answer with the option's letter from the given choices directly."
_DEFAULT_NA_POST = "Please answer the question using a single word or phrase."

PROMPT_PROFILES = {
    "default": {"pre": _DEFAULT_PRE, "mca_post": _DEFAULT_MCA_POST, "na_post": _DEFAULT_NA_POST},
    "gpt4v": {
        "pre": _DEFAULT_PRE,
        "mca_post": _DEFAULT_MCA_POST,
        "na_post": "Do not response anything other than a single number!",
    },
    "gemini_api": {
        "pre": _DEFAULT_PRE,
        "mca_post": _DEFAULT_MCA_POST,
        "na_post": "Do not response anything other than a single number!",
    },
}
"""The official prompt profiles (``pre``, ``mca_post``, ``na_post``); the typo is official."""

PARSERS = ("thinking-in-space", "lmms-eval-2026")
"""Numerical answer parsers: the official one (default) and the newer upstream lmms-eval one."""
DEFAULT_PARSER = "thinking-in-space"

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "thousand": 1000,
}  # fmt: skip
_DIGIT_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LETTER_RUN = re.compile(r"[a-z]+")


def _check_question_type(question_type: str) -> None:
    if question_type not in QUESTION_TYPES:
        raise ValueError(
            f"unknown question_type {question_type!r}; expected one of: {', '.join(QUESTION_TYPES)}"
        )


def task_key(question_type: str) -> str:
    """Return the official result key of the task a ``question_type`` belongs to.

    >>> task_key("object_rel_direction_hard")
    'object_rel_direction_accuracy'
    """
    _check_question_type(question_type)
    if question_type in REL_DIRECTION_TYPES:
        return "object_rel_direction" + _ACC_SUFFIX
    if question_type in NA_QUESTION_TYPES:
        return question_type + _MRA_SUFFIX
    return question_type + _ACC_SUFFIX


def build_prompt(
    question: str,
    question_type: str,
    options: Sequence[str] | None = None,
    profile: str = "default",
    *,
    pre_prompt: str | None = None,
    mca_post_prompt: str | None = None,
    na_post_prompt: str | None = None,
) -> str:
    """Build the official text prompt of one question (the video frames are a separate input).

    NA: ``pre + "\\n" + question + "\\n" + na_post``.
    MCA: ``pre``, ``question``, ``"Options:"``, every option verbatim in dataset order, ``mca_post``,
    joined by ``"\\n"``.

    Args:
        question: the question text (``question`` field).
        question_type: one of :data:`QUESTION_TYPES`.
        options: the option strings of an MCA question (they already start with their letter);
            must be ``None`` or empty for NA questions.
        profile: ``"default"``, ``"gpt4v"`` or ``"gemini_api"`` (see :data:`PROMPT_PROFILES`).
        pre_prompt, mca_post_prompt, na_post_prompt: override the profile's strings; an empty
            string falls back to the default string, exactly like the official code.
    """
    if profile not in PROMPT_PROFILES:
        raise ValueError(f"unknown prompt profile {profile!r}; expected one of: {', '.join(PROMPT_PROFILES)}")
    _check_question_type(question_type)
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    strings = PROMPT_PROFILES[profile]
    pre = (strings["pre"] if pre_prompt is None else pre_prompt) or _DEFAULT_PRE
    if question_type in NA_QUESTION_TYPES:
        if options:
            raise ValueError(f"numerical question_type {question_type!r} takes no options, got {list(options)!r}")
        post = (strings["na_post"] if na_post_prompt is None else na_post_prompt) or _DEFAULT_NA_POST
        return pre + "\n" + question + "\n" + post
    options = _check_options(options, question_type)
    post = (strings["mca_post"] if mca_post_prompt is None else mca_post_prompt) or _DEFAULT_MCA_POST
    return "\n".join([pre, question, "Options:", *options, post])


def _check_options(options, question_type: str) -> list[str]:
    if options is None or isinstance(options, str) or len(options) == 0:
        raise ValueError(
            f"multiple-choice question_type {question_type!r} needs a non-empty list of option strings, got {options!r}"
        )
    options = list(options)
    for option in options:
        if not isinstance(option, str):
            raise TypeError(f"options must be strings, got {type(option).__name__} ({option!r})")
    return options


def reduce_prediction(prediction: str) -> str:
    """Reduce a raw answer to the token the official code compares (spec §4 steps 1-3).

    Take the text before the first U+0020 space (tabs and newlines do not separate), remove every
    trailing ``"."``, then strip surrounding whitespace. The raw text is not stripped first, so an
    answer starting with a space reduces to ``""``.
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}")
    return prediction.split(" ", 1)[0].rstrip(".").strip()


def parse_number(text: str) -> float | None:
    """Convert text with Python's ``float()`` rule; return ``None`` if it is not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def extract_number_2026(prediction: str) -> float | None:
    """The numerical parser of upstream lmms-eval since 2026-07 (spec §5.3); ``None`` = no prediction.

    The first digit number (``-?\\d+(\\.\\d+)?``) or the first run of English number words,
    whichever starts first, is the answer; number words are combined with ``hundred`` and
    ``thousand`` multipliers (``"two hundred and five"`` = 205).
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}")
    text = prediction.strip().lower()
    if not text:
        return None
    digits = _DIGIT_NUMBER.search(text)
    run_start, run = None, []
    for match in _LETTER_RUN.finditer(text):
        word = match.group(0)
        if run_start is None:
            if word in _NUMBER_WORDS:
                run_start, run = match.start(), [word]
        elif word == "and":
            continue
        elif word in _NUMBER_WORDS:
            run.append(word)
        else:
            break
    if digits is not None and (run_start is None or digits.start() < run_start):
        return float(digits.group(0))
    if run_start is None:
        return None
    total, group = 0, 0
    for word in run:
        value = _NUMBER_WORDS[word]
        if value == 100:
            group = max(group, 1) * 100
        elif value == 1000:
            total += max(group, 1) * 1000
            group = 0
        else:
            group += value
    return float(total + group)


def parse_ground_truth(ground_truth, question_type: str, question_id=None) -> float:
    """Parse the ground truth of a numerical question and reject impossible values.

    Raises:
        ValueError: naming the question ``id`` and the ``ground_truth`` field when the value is not
            a number, not finite, or not > 0 (the official code would score 0.0, give every
            prediction full marks, or crash with a division by zero).
    """
    where = f"question id {question_id!r}" if question_id is not None else "question"
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, (str, int, float)):
        raise ValueError(
            f"{where} ({question_type}): field 'ground_truth' must be a number or numeric text, got {ground_truth!r}"
        )
    value = parse_number(ground_truth)
    if value is None:
        raise ValueError(f"{where} ({question_type}): field 'ground_truth' is not a number: {ground_truth!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{where} ({question_type}): field 'ground_truth' must be a finite number > 0 for MRA, "
            f"got {ground_truth!r}"
        )
    return value


def mean_relative_accuracy(prediction: float | None, target: float) -> float:
    """Mean Relative Accuracy: the fraction of the ten tolerances ``t`` with ``|p - y| / y <= t``.

    ``prediction=None`` (no prediction), NaN or infinity gives 0.0. ``target`` must be > 0 (see
    :func:`parse_ground_truth`). Results are exact multiples of 0.1 (``count / 10``).
    """
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"MRA target must be a finite number > 0, got {target!r}")
    if prediction is None or not math.isfinite(prediction):
        return 0.0
    relative_error = abs(prediction - target) / target
    return sum(relative_error <= tolerance for tolerance in MRA_TOLERANCES) / 10


def score(
    prediction: str,
    ground_truth,
    question_type: str,
    options: Sequence[str] | None = None,
    parser: str = DEFAULT_PARSER,
    *,
    question_id=None,
) -> float:
    """Score one raw model answer exactly like the official VSI-Bench evaluation.

    Args:
        prediction: the raw generated text (not stripped).
        ground_truth: an option letter (MCA) or a decimal number as text (NA).
        question_type: one of :data:`QUESTION_TYPES`.
        options: optional option strings of an MCA question; when given, ``ground_truth`` must be
            the letter of one of them (a data consistency check; scoring does not use them).
        parser: ``"thinking-in-space"`` (official, default) or ``"lmms-eval-2026"`` (newer
            upstream numerical parser; MCA scoring is the same for both).
        question_id: the question's ``id``, used only in error messages.

    Returns:
        1.0/0.0 accuracy for MCA; MRA (a multiple of 0.1) for NA; unparsable NA answers give 0.0.

    Raises:
        ValueError: unknown question type or parser, impossible ground truth.
        TypeError: ``prediction`` is not a string.
    """
    _check_question_type(question_type)
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; expected one of: {', '.join(PARSERS)}")
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}")
    if question_type in MCA_QUESTION_TYPES:
        where = f"question id {question_id!r}" if question_id is not None else "question"
        if not isinstance(ground_truth, str) or not ground_truth:
            raise ValueError(
                f"{where} ({question_type}): field 'ground_truth' must be an option letter, got {ground_truth!r}"
            )
        if options is not None:
            letters = [option.split(".", 1)[0].strip() for option in _check_options(options, question_type)]
            if ground_truth.lower() not in (letter.lower() for letter in letters):
                raise ValueError(
                    f"{where} ({question_type}): field 'ground_truth' {ground_truth!r} is not one of the "
                    f"option letters {letters}"
                )
        return 1.0 if reduce_prediction(prediction).lower() == ground_truth.lower() else 0.0
    target = parse_ground_truth(ground_truth, question_type, question_id)
    if parser == "lmms-eval-2026":
        value = extract_number_2026(prediction)
    else:
        value = parse_number(reduce_prediction(prediction))
    return mean_relative_accuracy(value, target)


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def aggregate(records: Iterable[Mapping]) -> dict[str, float]:
    """Aggregate scored questions into the official VSI-Bench results (fractions in [0, 1]).

    Args:
        records: mappings with ``question_type`` and ``score`` (other keys are ignored).

    Returns:
        ``{task_key: mean, ..., "overall": macro mean over the tasks present,
        "micro_average": mean over all questions}``. Task keys follow :data:`TASK_KEYS` order and
        only tasks present in ``records`` appear. ``object_rel_direction_accuracy`` is the plain
        mean of the easy/medium/hard means. ``overall`` is the official number (the paper reports
        it ×100); ``micro_average`` is not.

    Raises:
        ValueError: no records, a record without ``question_type``/``score``, an unknown type, a
            score outside [0, 1], or only some of the three relative-direction subtypes present.
    """
    per_type: dict[str, list[float]] = {}
    all_scores: list[float] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping) or "question_type" not in record or "score" not in record:
            raise ValueError(f"record {index} must be a mapping with 'question_type' and 'score', got {record!r}")
        question_type, value = record["question_type"], record["score"]
        _check_question_type(question_type)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"record {index} ({question_type}): 'score' must be a number in [0, 1], got {value!r}")
        per_type.setdefault(question_type, []).append(float(value))
        all_scores.append(float(value))
    if not all_scores:
        raise ValueError("aggregate() needs at least one scored record")

    means = {question_type: _mean(values) for question_type, values in per_type.items()}
    present_directions = [t for t in REL_DIRECTION_TYPES if t in means]
    if present_directions and len(present_directions) < len(REL_DIRECTION_TYPES):
        missing = [t for t in REL_DIRECTION_TYPES if t not in means]
        raise ValueError(
            "object_rel_direction is the mean of its three subtypes, but these are missing: " + ", ".join(missing)
        )
    tasks: dict[str, float] = {}
    for question_type, mean in means.items():
        if question_type not in REL_DIRECTION_TYPES:
            tasks[task_key(question_type)] = mean
    if present_directions:
        tasks["object_rel_direction" + _ACC_SUFFIX] = _mean([means[t] for t in REL_DIRECTION_TYPES])
    result = {key: tasks[key] for key in TASK_KEYS if key in tasks}
    result["overall"] = _mean(list(result.values()))
    result[MICRO_AVERAGE_KEY] = _mean(all_scores)
    return result


def format_table(results: Mapping[str, float], title: str | None = None) -> str:
    """Render :func:`aggregate` output as the paper's table (×100, two decimals), overall first.

    Tasks absent from ``results`` are shown as ``-``; the micro average, if present, is printed
    below the table with an explicit note that it is not the official number.
    """
    columns = ["Overall", *TASK_DISPLAY_NAMES.values()]
    values = [results.get("overall"), *(results.get(key) for key in TASK_KEYS)]
    cells = ["-" if v is None else f"{100 * v:.2f}" for v in values]
    widths = [max(len(c), len(v)) for c, v in zip(columns, cells)]
    lines = [] if title is None else [title]
    lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(columns, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    lines.append("| " + " | ".join(v.rjust(w) for v, w in zip(cells, widths)) + " |")
    if MICRO_AVERAGE_KEY in results:
        lines.append(
            f"micro average over questions (not the official metric): {100 * results[MICRO_AVERAGE_KEY]:.2f}"
        )
    return "\n".join(lines)
