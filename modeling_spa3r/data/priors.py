"""Blind baselines for VSI-Bench-format records: what can be scored without looking at the video.

:func:`blind_priors` fits answer priors on a train split and scores them on an eval split with the
project's VSI-Bench scorer (:mod:`modeling_spa3r.vsibench`: exact-match accuracy for multiple choice,
MRA for numbers). Three priors per question type:

* ``chance`` -- multiple choice: the expected accuracy of a uniformly random option (mean of
  ``1 / len(options)``); numbers: the expected MRA of a random train answer of the same type.
* ``frequent`` -- multiple choice: the option whose text is the type's most frequent train answer
  text (else the most frequent train letter); numbers: the train mean of the type (one template).
* ``text`` -- the best prior fittable from the question text and options alone: per type, the
  family with the highest 2-fold (by scene) cross-validated train score among option-rate tables
  keyed by letter, option text, or option text with each template slot (e.g. the primary object of a
  relative-distance question), pairwise-order tables for list answers (appearance order, routes),
  and for numbers the MRA-optimal constant per template slot value (e.g. per category).
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import vsibench
from .synthvsi import TEMPLATES

PRIORS = ("chance", "frequent", "text")
_SMOOTHING = 2.0  # pseudo-counts pulling an option-rate estimate towards chance


def _template_regex(template: str) -> re.Pattern:
    parts, seen, pattern = re.split(r"\{(\w+)\}", template), set(), ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        else:  # a slot used twice must repeat the same text
            pattern += f"(?P={part})" if part in seen else f"(?P<{part}>.+?)"
            seen.add(part)
    return re.compile(pattern + r"\Z", re.S)


_REGEXES = {qt: _template_regex(t) for qt, t in TEMPLATES.items()}
_LIST_SLOTS = ("choices", "steps")  # slots that repeat the options; not used as keys


def question_slots(record: dict) -> dict[str, str]:
    """The template slot values of a record's question (``{}`` when it does not match its template)."""
    regex = _REGEXES.get(record["question_type"])
    match = regex.match(record["question"]) if regex else None
    if match is None:
        return {}
    return {k: v for k, v in match.groupdict().items() if k not in _LIST_SLOTS}


def _options(record: dict) -> list[tuple[str, str]]:
    """(letter, text) of each option ``"A. text"``."""
    return [(o.split(".", 1)[0].strip(), o.split(".", 1)[1].strip()) for o in record["options"]]


def _answer_text(record: dict) -> str:
    return dict(_options(record))[record["ground_truth"]]


# ----------------------------------------------------------------------------------------------
# Multiple choice: each family scores every option; the prediction is the best option's letter
# ----------------------------------------------------------------------------------------------

Scorer = Callable[[dict], list[float]]


def _rate_family(key: Callable[[dict, str, str], tuple]) -> Callable[[list[dict]], Scorer]:
    """Option-rate table: P(correct | key(record, letter, text)), smoothed towards 1 / n_options."""

    def fit(train: list[dict]) -> Scorer:
        correct, shown = Counter(), Counter()
        for r in train:
            answer = r["ground_truth"]
            for letter, text in _options(r):
                k = key(r, letter, text)
                shown[k] += 1
                correct[k] += letter == answer

        def scores(r: dict) -> list[float]:
            base = 1.0 / len(r["options"])
            return [(correct[k] + _SMOOTHING * base) / (shown[k] + _SMOOTHING)
                    for k in (key(r, letter, text) for letter, text in _options(r))]

        return scores

    return fit


def _fit_pairwise(train: list[dict]) -> Scorer:
    """For list answers ("a, b, c"): sum of log P(x before y) over the option's ordered pairs."""
    before = Counter()
    for r in train:
        items = _answer_text(r).split(", ")
        for i, j in ((i, j) for i in range(len(items)) for j in range(i + 1, len(items))):
            before[(items[i], items[j])] += 1

    def scores(r: dict) -> list[float]:
        out = []
        for _, text in _options(r):
            items = text.split(", ")
            out.append(sum(math.log((before[(items[i], items[j])] + 1) /
                                    (before[(items[i], items[j])] + before[(items[j], items[i])] + 2))
                           for i in range(len(items)) for j in range(i + 1, len(items))))
        return out

    return scores


def _mca_families(records: list[dict]) -> dict[str, Callable[[list[dict]], Scorer]]:
    families = {
        "letter": _rate_family(lambda r, letter, text: (letter,)),
        "option text": _rate_family(lambda r, letter, text: (text,)),
        "option text + all slots": _rate_family(
            lambda r, letter, text: (text, tuple(sorted(question_slots(r).items())))),
    }
    for slot in sorted({s for r in records for s in question_slots(r)}):
        families[f"option text + {slot}"] = _rate_family(
            lambda r, letter, text, slot=slot: (text, question_slots(r).get(slot)))
    if any(", " in _answer_text(r) for r in records):
        families["pairwise order"] = _fit_pairwise
    return families


def _predict_letter(scores: list[float], record: dict, letter_rank: dict[str, int]) -> str:
    """Letter of the best-scored option; ties go to the letter that is most often right in train."""
    letters = [letter for letter, _ in _options(record)]
    best = max(scores)
    tied = [letter for letter, s in zip(letters, scores) if s >= best - 1e-12]
    return min(tied, key=lambda letter: letter_rank.get(letter, len(letter_rank)))


def _letter_rank(train: list[dict]) -> dict[str, int]:
    counts = Counter(r["ground_truth"] for r in train)
    return {letter: i for i, (letter, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}


def _mca_predictions(fit, train: list[dict], evaluate: list[dict]) -> list[str]:
    scorer, rank = fit(train), _letter_rank(train)
    return [_predict_letter(scorer(r), r, rank) for r in evaluate]


def _frequent_mca(train: list[dict], evaluate: list[dict]) -> list[str]:
    text_counts = Counter(_answer_text(r) for r in train)
    rank = _letter_rank(train)

    def pick(r):
        scores = [text_counts.get(text, 0) for _, text in _options(r)]
        return _predict_letter(scores, r, rank)

    return [pick(r) for r in evaluate]


# ----------------------------------------------------------------------------------------------
# Numbers: each family predicts one value per record
# ----------------------------------------------------------------------------------------------

def mra_matrix(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """MRA of every prediction (P,) against every target (T,) -> (P, T), the VSI-Bench tolerances."""
    rel = np.abs(predictions[:, None] - targets[None, :]) / targets[None, :]
    return sum((rel <= t).astype(np.float64) for t in vsibench.MRA_TOLERANCES) / 10


def _best_constant(values: np.ndarray) -> float:
    """The value among ``values`` with the highest mean MRA against all of them."""
    candidates = np.unique(values)
    if len(candidates) > 400:
        candidates = np.quantile(values, np.linspace(0, 1, 400))
    return float(candidates[int(np.argmax(mra_matrix(candidates, values).mean(1)))])


def _values(records: list[dict]) -> np.ndarray:
    return np.array([float(r["ground_truth"]) for r in records])


NumberPredictor = Callable[[dict], float]


def _slot_constant_family(key: Callable[[dict], object]) -> Callable[[list[dict]], NumberPredictor]:
    """MRA-optimal constant per key value; unseen keys fall back to the type's constant."""

    def fit(train: list[dict]) -> NumberPredictor:
        groups = defaultdict(list)
        for r in train:
            groups[key(r)].append(float(r["ground_truth"]))
        fallback = _best_constant(_values(train))
        table = {k: _best_constant(np.array(v)) for k, v in groups.items()}
        return lambda r: table.get(key(r), fallback)

    return fit


def _na_families(records: list[dict]) -> dict[str, Callable[[list[dict]], NumberPredictor]]:
    families = {
        "mean": lambda train: (lambda r, m=float(_values(train).mean()): m),
        "best constant": _slot_constant_family(lambda r: None),
        "all slots": _slot_constant_family(lambda r: tuple(sorted(question_slots(r).items()))),
    }
    slots = sorted({s for r in records for s in question_slots(r)})
    for slot in slots:
        families[f"per {slot}"] = _slot_constant_family(lambda r, slot=slot: question_slots(r).get(slot))
    if len(slots) > 1:  # unordered slot values, e.g. the two objects of a distance question
        families["slot set"] = _slot_constant_family(lambda r: tuple(sorted(question_slots(r).values())))
    return families


def _number_text(value: float) -> str:
    return f"{value:.6g}"


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------

def _score(records: list[dict], predictions: list[str]) -> float:
    return math.fsum(vsibench.score(p, r["ground_truth"], r["question_type"], question_id=r["id"])
                     for p, r in zip(predictions, records)) / len(records)


def _predict(question_type: str, fit, train: list[dict], evaluate: list[dict]) -> list[str]:
    if question_type in vsibench.MCA_QUESTION_TYPES:
        return _mca_predictions(fit, train, evaluate)
    predictor = fit(train)
    return [_number_text(predictor(r)) for r in evaluate]


def _folds(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Two halves by scene (a stable hash of ``scene_name``)."""
    a = [r for r in records if zlib.crc32(str(r["scene_name"]).encode()) % 2 == 0]
    b = [r for r in records if zlib.crc32(str(r["scene_name"]).encode()) % 2 == 1]
    return a, b


def _select_text_family(question_type: str, train: list[dict]) -> tuple[str, Callable]:
    """The text family with the best 2-fold cross-validated train score (first listed wins ties)."""
    families = (_mca_families if question_type in vsibench.MCA_QUESTION_TYPES else _na_families)(train)
    a, b = _folds(train)
    if not a or not b:
        name = next(iter(families))
        return name, families[name]
    best_name, best_score = None, -1.0
    for name, fit in families.items():
        cv = (_score(b, _predict(question_type, fit, a, b)) * len(b) +
              _score(a, _predict(question_type, fit, b, a)) * len(a)) / (len(a) + len(b))
        if cv > best_score + 1e-12:
            best_name, best_score = name, cv
    return best_name, families[best_name]


def _chance(question_type: str, train: list[dict], evaluate: list[dict]) -> float:
    if question_type in vsibench.MCA_QUESTION_TYPES:
        return math.fsum(1.0 / len(r["options"]) for r in evaluate) / len(evaluate)
    return float(mra_matrix(_values(train), _values(evaluate)).mean())


@dataclass
class BlindPriors:
    """Scores of the blind priors on an eval split.

    ``per_type[prior][question_type]`` and ``tasks[prior]`` (the :func:`vsibench.aggregate` keys:
    official task keys, ``overall``, ``micro_average``) are fractions in [0, 1]; the relative
    direction task and ``overall`` follow the official aggregation over the types present.
    """

    per_type: dict[str, dict[str, float]]
    tasks: dict[str, dict[str, float]]
    text_family: dict[str, str]
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # question_type -> (train, eval)

    def table(self) -> str:
        """Markdown table (x100): one row per question type, then the relative-direction task and overall."""
        return format_prior_table(self.per_type, self.tasks, self.text_family, self.counts)


def format_prior_table(per_type: dict, tasks: dict, text_family: dict, counts: dict | None = None) -> str:
    """Markdown table (x100) of :class:`BlindPriors` fields (also as read back from ``dataset.json``)."""
    lines = ["| question type | train | eval | chance | frequent | text | text - chance | text prior |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for qt in vsibench.QUESTION_TYPES:
        if qt not in per_type["chance"]:
            continue
        c, f, t = (100 * per_type[p][qt] for p in PRIORS)
        n_train, n_eval = counts[qt] if counts else ("", "")
        lines.append(f"| {qt} | {n_train} | {n_eval} | {c:.1f} | {f:.1f} | {t:.1f} | {t - c:+.1f} | "
                     f"{text_family[qt]} |")
    for key in ("object_rel_direction_accuracy", "overall"):
        if key in tasks.get("chance", {}):
            c, f, t = (100 * tasks[p][key] for p in PRIORS)
            lines.append(f"| **{key}** | | | {c:.1f} | {f:.1f} | {t:.1f} | {t - c:+.1f} | |")
    return "\n".join(lines)


def _per_type_scores(train_records: list[dict], eval_records: list[dict]):
    by_type_train, by_type_eval = defaultdict(list), defaultdict(list)
    for r in train_records:
        by_type_train[r["question_type"]].append(r)
    for r in eval_records:
        by_type_eval[r["question_type"]].append(r)
    present = [qt for qt in vsibench.QUESTION_TYPES if by_type_train[qt] and by_type_eval[qt]]
    per_type, families = {p: {} for p in PRIORS}, {}
    for qt in present:
        train, evaluate = by_type_train[qt], by_type_eval[qt]
        per_type["chance"][qt] = _chance(qt, train, evaluate)
        if qt in vsibench.MCA_QUESTION_TYPES:
            frequent = _frequent_mca(train, evaluate)
        else:
            frequent = [_number_text(float(_values(train).mean()))] * len(evaluate)
        per_type["frequent"][qt] = _score(evaluate, frequent)
        families[qt], fit = _select_text_family(qt, train)
        per_type["text"][qt] = _score(evaluate, _predict(qt, fit, train, evaluate))
    counts = {qt: (len(by_type_train[qt]), len(by_type_eval[qt])) for qt in present}
    return per_type, families, counts


def _result(per_type: dict, families: dict, counts: dict) -> BlindPriors:
    if not counts:
        raise ValueError("blind_priors: no question type has records in both the train and the eval split")
    tasks = {}
    directions = all(qt in counts for qt in vsibench.REL_DIRECTION_TYPES)
    aggregated = [qt for qt in counts if directions or qt not in vsibench.REL_DIRECTION_TYPES]
    for prior in PRIORS:
        # one pseudo-record per eval question carrying its type's mean: the official aggregation of
        # the per-type means (relative direction only with all three subtypes), a micro average
        tasks[prior] = vsibench.aggregate({"question_type": qt, "score": per_type[prior][qt]}
                                          for qt in aggregated for _ in range(counts[qt][1])) if aggregated else {}
    return BlindPriors(per_type, tasks, families, counts)


def blind_priors(train_records: list[dict], eval_records: list[dict]) -> BlindPriors:
    """Fit the blind priors on ``train_records`` and score them on ``eval_records`` (VSI-Bench records).

    Only question types present in both splits are scored; the relative-direction task and
    ``overall`` count the direction subtypes only when all three are present. Raises ``ValueError``
    when no type is present in both.
    """
    return _result(*_per_type_scores(train_records, eval_records))


def cross_fitted_priors(records: list[dict], folds: int = 5) -> BlindPriors:
    """Blind priors scored on every record: ``folds`` folds by scene, each scored by priors fitted on
    the others (more eval questions than one split, same priors). ``text_family`` is the family most
    folds chose; ``counts`` are (fitted-on questions averaged over folds, scored questions)."""
    if folds < 2:
        raise ValueError(f"cross_fitted_priors: folds must be >= 2, got {folds}")
    fold_of = {name: i % folds for i, name in enumerate(sorted({str(r["scene_name"]) for r in records},
                                                               key=lambda n: (zlib.crc32(n.encode()), n)))}
    sums = {p: defaultdict(float) for p in PRIORS}
    n_eval, n_train, chosen = Counter(), Counter(), defaultdict(Counter)
    for k in range(folds):
        train = [r for r in records if fold_of[str(r["scene_name"])] != k]
        evaluate = [r for r in records if fold_of[str(r["scene_name"])] == k]
        per_type, families, counts = _per_type_scores(train, evaluate)
        for qt, (nt, ne) in counts.items():
            for p in PRIORS:
                sums[p][qt] += per_type[p][qt] * ne
            n_eval[qt] += ne
            n_train[qt] += nt
            chosen[qt][families[qt]] += 1
    per_type = {p: {qt: sums[p][qt] / n_eval[qt] for qt in n_eval} for p in PRIORS}
    families = {qt: chosen[qt].most_common(1)[0][0] for qt in n_eval}
    counts = {qt: (round(n_train[qt] / folds), n_eval[qt]) for qt in n_eval}
    return _result(per_type, families, counts)
