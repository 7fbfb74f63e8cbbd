"""A results table that carries its own evidence: per-question predictions of several models on one VSI-Bench-format
split → `results.md` and `results.png`.

For every official task (all eight are shown; a task without questions is labelled, not dropped): the number of
questions, chance and the best blind prior (:mod:`modeling_spa3r.data.priors`, fitted on the train split and, when
given, on a larger question pool of the same train rooms; the table marks where the pool's is the higher), each
model's score with a seeded 95 % bootstrap interval (questions resampled within each question type), and a collapse
line per model (the share of the model's most frequent parsed answer per task; above ``collapse_threshold`` the task
is flagged), and, when given, the frames' ceiling (what a perfect perceiver of the frames the models see would score,
:mod:`modeling_spa3r.data.answerability`). The overall row is the official macro mean over the tasks with questions.
The caption says plainly which models do not beat the blind prior (the interval's lower end not above it) or collapse
on which tasks.

The input controls (`input_control`, `controls_markdown`) compare one model's answers with its own scenes' frames or
Spa3R views against another scene's (`spa3r eval --frames-from/--geometry-from other-scene`): does it use them?
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import vsibench

OVERALL = "overall"
COLLAPSE_THRESHOLD = 0.8
CEILING_MARGIN = 0.05  # a task whose frames' ceiling is less than this above the blind prior is named in the caption


@dataclass
class TaskRow:
    """One task of the table; scores are fractions in [0, 1] (`None` where the task has no questions)."""

    key: str  # official task key (vsibench.TASK_KEYS) or "overall"
    name: str
    n: int
    chance: float | None
    prior: float | None  # best blind prior: max of the most-frequent and the text-only prior (of each fit)
    scores: dict[str, float | None]  # model → score
    intervals: dict[str, tuple[float, float] | None]  # model → 95 % bootstrap interval
    top_answer_share: dict[str, float | None] = field(default_factory=dict)  # model → collapse line
    top_answer: dict[str, str | None] = field(default_factory=dict)
    prior_source: str | None = None  # "pool" where the prior fitted on the train rooms' question pool is the higher
    ceiling: float | None = None  # a perfect perceiver of the frames the models see (`data.answerability`)


@dataclass
class ResultsReport:
    """Every number of `results.md` / `results.png`."""

    rows: list[TaskRow]  # the eight tasks in the paper's order, then the overall (macro) row
    models: list[str]
    caption: str
    resamples: int
    seed: int
    collapse_threshold: float
    ceiling_frames: int | None = None  # the frames per question the ceiling column assumes (None: no ceiling)

    def to_dict(self) -> dict:
        return {"models": self.models, "caption": self.caption, "resamples": self.resamples, "seed": self.seed,
                "collapse_threshold": self.collapse_threshold, "ceiling_frames": self.ceiling_frames,
                "rows": [vars(row) for row in self.rows]}

    def markdown(self, title: str | None = None) -> str:
        """The table (×100) with the collapse columns, then the caption."""
        head = ["task", "n", "chance", "blind prior"]
        head += [] if self.ceiling_frames is None else [f"ceiling ({self.ceiling_frames} frames)"]
        head += [f"{m} [95 % CI]" for m in self.models]
        head += [f"{m}: top answer share" for m in self.models]
        lines = [] if title is None else [f"# {title}", ""]
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for row in self.rows:
            if row.n == 0:
                lines.append(f"| {row.name} | 0 | no questions |" + " - |" * (len(head) - 3))
                continue
            prior = _pct(row.prior) + (f" ({row.prior_source})" if row.prior_source else "")
            cells = [row.name, str(row.n), _pct(row.chance), prior]
            cells += [] if self.ceiling_frames is None else [_pct(row.ceiling)]
            for m in self.models:
                low, high = row.intervals[m]
                cells.append(f"{_pct(row.scores[m])} [{_pct(low)}, {_pct(high)}]")
            for m in self.models:
                share = row.top_answer_share.get(m)
                if share is None:
                    cells.append("")
                else:
                    flag = " **collapsed**" if share > self.collapse_threshold else ""
                    cells.append(f"{100 * share:.0f} % ({row.top_answer[m]}){flag}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", self.caption]
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str) -> None:
        """Grouped bars with interval whiskers; chance and blind prior as ticks (dash-dot where the prior fitted on
        the question pool is the higher); collapsed bars hatched."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        caption = textwrap.wrap(self.caption, 230)  # about the figure's width at 7 pt
        caption_height = 0.2 + 0.13 * len(caption)  # inches
        figure, axis = plt.subplots(figsize=(12, 4.6 + caption_height), dpi=120)
        width = 0.8 / max(1, len(self.models))
        colours = ["#c44e52", "#4c72b0", "#55a868", "#8172b2"]
        labelled = set()  # legend entries drawn once
        for i, row in enumerate(self.rows):
            if row.n == 0:
                axis.text(i, 3, "no questions", ha="center", va="bottom", rotation=90, fontsize=8, color="#666666")
                continue
            for j, m in enumerate(self.models):
                x = i - 0.4 + width * (j + 0.5)
                value, (low, high) = 100 * row.scores[m], row.intervals[m]
                collapsed = (row.top_answer_share.get(m) or 0) > self.collapse_threshold
                axis.bar(x, value, width, color=colours[j % len(colours)], hatch="//" if collapsed else None,
                         edgecolor="black" if collapsed else None)
                axis.errorbar(x, value, yerr=[[value - 100 * low], [100 * high - value]], color="black", capsize=2,
                              linewidth=1)
                axis.text(x, 100 * high + 1, f"{value:.0f}", ha="center", fontsize=7)
            pool = row.prior_source == "pool"
            prior = ("-.", "blind prior (pool): fitted on the train rooms' question pool") if pool else ("-", "blind prior")
            for value, (style, label) in ((row.chance, (":", "chance")), (row.prior, prior)):
                axis.hlines(100 * value, i - 0.45, i + 0.45, colors="black", linestyles=style, linewidth=1.6,
                            label=label if label not in labelled else None)  # fmt: skip
                labelled.add(label)
            if row.ceiling is not None:
                label = f"ceiling: a perfect perceiver of the {self.ceiling_frames} frames"
                axis.hlines(100 * row.ceiling, i - 0.45, i + 0.45, colors="#888888", linestyles="--", linewidth=1.6,
                            label=label if label not in labelled else None)  # fmt: skip
                labelled.add(label)
        axis.set_xticks(range(len(self.rows)), [_tick(row) for row in self.rows], fontsize=8,
                        rotation=20)
        for j, m in enumerate(self.models):  # legend entries (drawn empty)
            axis.bar(0, 0, 0, color=colours[j % len(colours)], label=m)
        axis.bar(0, 0, 0, color="white", hatch="//", edgecolor="black",
                 label=f"hatched: collapsed (one answer > {100 * self.collapse_threshold:.0f} %)")
        axis.set_ylim(0, 125)
        axis.set_ylabel("score ×100 (MRA or accuracy), 95 % bootstrap CI")
        axis.legend(fontsize=7, loc="upper center", ncol=3)
        axis.set_title(title, fontsize=10)
        figure.text(0.01, 0.01, "\n".join(caption), fontsize=7, va="bottom")
        figure.tight_layout(rect=(0, caption_height / figure.get_figheight(), 1, 1))
        figure.savefig(path)
        plt.close(figure)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _tick(row: TaskRow) -> str:
    return row.name.replace(" (", "\n(") + f"\nn={row.n}"


def _task_of(question_type: str) -> str:
    return vsibench.task_key(question_type)


def _scores_per_type(records: list[dict], model: str) -> dict[str, np.ndarray]:
    per_type: dict[str, list[float]] = {}
    for record in records:
        per_type.setdefault(record["question_type"], []).append(float(record["score"]))
    if not per_type:
        raise ValueError(f"model {model!r}: no scored predictions")
    return {t: np.asarray(v) for t, v in per_type.items()}


def _bootstrap(per_type: dict[str, np.ndarray], tasks: list[str], resamples: int, seed: int) -> dict:
    """95 % percentile intervals of each task score and the macro overall, resampling within each type."""
    rng = np.random.default_rng(seed)
    draws = {t: v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1) for t, v in sorted(per_type.items())}
    task_draws = {}
    for task in tasks:
        if task == "object_rel_direction_accuracy":
            subtypes = [draws[t] for t in vsibench.REL_DIRECTION_TYPES if t in draws]
            if len(subtypes) == len(vsibench.REL_DIRECTION_TYPES):
                task_draws[task] = np.mean(subtypes, axis=0)
        else:
            found = [draws[t] for t in draws if _task_of(t) == task]
            if found:
                task_draws[task] = found[0]
    task_draws[OVERALL] = np.mean(list(task_draws.values()), axis=0)
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in task_draws.items()}


def _collapse(records: list[dict], task: str) -> tuple[float | None, str | None]:
    answers = [_answer_text(r) for r in records if _task_of(r["question_type"]) == task]
    if not answers:
        return None, None
    answer, count = Counter(answers).most_common(1)[0]
    return count / len(answers), answer


def _answer_text(record: dict) -> str:
    """The parsed answer (the raw output when unparsed); an empty or unparsable answer reads "(no answer)"."""
    answer = record.get("answer")
    text = str(answer if answer is not None else record.get("output", "")).strip()
    return text or "(no answer)"


def build_report(
    predictions: dict[str, list[dict]],
    priors,
    *,
    resamples: int = 2000,
    seed: int = 0,
    collapse_threshold: float = COLLAPSE_THRESHOLD,
    pool_priors=None,
    ceiling=None,
) -> ResultsReport:
    """Assemble the table from per-question prediction records (`predictions.jsonl` rows: `question_type`,
    `score`, `answer`) of each model on the same questions, and the blind priors of that split
    (:class:`~modeling_spa3r.data.priors.BlindPriors`, or its ``tasks`` dict ``prior → task key → score``). With
    `pool_priors` (the same, fitted on every candidate question of the train rooms), each task's blind prior is the
    higher of the two fits (`TaskRow.prior_source` "pool" where the pool's wins). With `ceiling`
    (:class:`~modeling_spa3r.data.answerability.FramesCeiling` of the same questions), each task shows what a perfect
    perceiver of the frames the models see would score."""
    if not predictions:
        raise ValueError("build_report: no models given")
    if resamples < 100:
        raise ValueError(f"build_report: resamples must be >= 100 for a 95 % interval, got {resamples}")
    models = list(predictions)
    ids = {m: sorted(str(r["id"]) for r in records) for m, records in predictions.items() if records and "id" in records[0]}
    if len({tuple(v) for v in ids.values()}) > 1:
        raise ValueError(f"build_report: the models answered different questions ({', '.join(f'{m}: {len(v)}' for m, v in ids.items())})")
    fits = {None: getattr(priors, "tasks", priors)}
    if pool_priors is not None:
        fits["pool"] = getattr(pool_priors, "tasks", pool_priors)
    prior_tasks = fits[None]
    per_type = {m: _scores_per_type(records, m) for m, records in predictions.items()}
    type_counts = {t: len(v) for t, v in per_type[models[0]].items()}
    tasks = list(vsibench.TASK_KEYS)
    official = {m: vsibench.aggregate(records) for m, records in predictions.items()}  # checks the records
    intervals = {m: _bootstrap(per_type[m], tasks, resamples, seed) for m in models}
    rows = []
    for task in tasks:
        n = sum(c for t, c in type_counts.items() if _task_of(t) == task)
        scores = {m: official[m].get(task) for m in models}
        if n == 0:
            rows.append(TaskRow(task, vsibench.TASK_DISPLAY_NAMES[task], n, None, None,
                                dict.fromkeys(models), dict.fromkeys(models)))  # fmt: skip
            continue
        chance = prior_tasks.get("chance", {}).get(task)
        blind = [(fit[p][task], source) for source, fit in fits.items() for p in ("frequent", "text")
                 if task in fit.get(p, {})]  # fmt: skip
        prior, source = max(blind, key=lambda pair: pair[0]) if blind else (None, None)
        row = TaskRow(task, vsibench.TASK_DISPLAY_NAMES[task], n, chance, prior, scores,
                      {m: intervals[m][task] for m in models}, prior_source=source,
                      ceiling=None if ceiling is None else ceiling.tasks.get(task))  # fmt: skip
        for m in models:
            row.top_answer_share[m], row.top_answer[m] = _collapse(predictions[m], task)
        rows.append(row)
    present = [row for row in rows if row.n > 0]
    overall = TaskRow(OVERALL, f"overall (macro mean of {len(present)} tasks)", sum(row.n for row in present),
                      _mean_or_none([row.chance for row in present]), _mean_or_none([row.prior for row in present]),
                      {m: official[m][OVERALL] for m in models},
                      {m: intervals[m][OVERALL] for m in models},
                      ceiling=None if ceiling is None else ceiling.tasks.get(OVERALL))  # fmt: skip
    rows.append(overall)
    frames = None if ceiling is None else ceiling.num_frames
    return ResultsReport(rows, models, _caption(rows, models, collapse_threshold, frames), resamples, seed,
                         collapse_threshold, frames)  # fmt: skip


def _mean_or_none(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else math.fsum(values) / len(values)


def _caption(rows: list[TaskRow], models: list[str], threshold: float, ceiling_frames: int | None = None) -> str:
    """Plain sentences: per model, the tasks where it beats the blind prior (interval above it), those where it
    does not, and the tasks where it collapsed; the tasks whose frames add less than CEILING_MARGIN to the prior."""
    tasks = [row for row in rows if row.key != OVERALL and row.n > 0]
    empty = [row.name for row in rows if row.key != OVERALL and row.n == 0]
    sentences = []
    for m in models:
        beats = [r.name for r in tasks if r.prior is not None and r.intervals[m][0] > r.prior]
        below = [r.name for r in tasks if r.prior is not None and r.intervals[m][0] <= r.prior]
        collapsed = [f"{r.name} ({100 * r.top_answer_share[m]:.0f} % '{r.top_answer[m]}')" for r in tasks
                     if (r.top_answer_share.get(m) or 0) > threshold]
        overall = rows[-1]
        verdict = "beats" if overall.prior is not None and overall.intervals[m][0] > overall.prior else "does NOT beat"
        sentence = f"{m} {verdict} the blind prior overall"
        sentence += f"; beats it on {len(beats)}/{len(tasks)} tasks" + (f" ({', '.join(beats)})" if beats else "")
        if below:
            sentence += f"; does not beat it on {', '.join(below)}"
        if collapsed:
            sentence += f"; COLLAPSED (one answer > {100 * threshold:.0f} %) on {', '.join(collapsed)}"
        sentences.append(sentence + ".")
    for a, b in itertools.combinations(models, 2):
        better = [r.name for r in tasks if r.intervals[a][0] > r.intervals[b][1]]
        worse = [r.name for r in tasks if r.intervals[a][1] < r.intervals[b][0]]
        sentences.append(f"{a} vs {b}: intervals separate in favour of {a} on "
                         f"{', '.join(better) if better else 'no task'}, in favour of {b} on "
                         f"{', '.join(worse) if worse else 'no task'}; elsewhere the difference is within noise.")
    if ceiling_frames is not None:
        short = [f"{r.name} ({_pct(r.ceiling)} against {_pct(r.prior)})" for r in tasks
                 if None not in (r.prior, r.ceiling) and r.ceiling < r.prior + CEILING_MARGIN]  # fmt: skip
        sentences.append(f"A perfect perceiver of the {ceiling_frames} frames each model sees would score "
                         f"{_pct(rows[-1].ceiling)} overall (ceiling)" + (
                             f"; on {', '.join(short)} those frames add less than {100 * CEILING_MARGIN:.0f} points "
                             "to the blind prior, so no model can be expected to beat it there" if short else "")
                         + ".")  # fmt: skip
    if empty:
        sentences.append(f"No questions for: {', '.join(empty)}.")
    pooled = any(r.prior_source == "pool" for r in tasks)
    sentences.append("Beating the prior means the 95 % interval's lower end is above the best blind prior "
                     "(most-frequent or text-only answer, fitted on the train split"
                     + ("; marked (pool): fitted on every candidate question of the train rooms, where that is higher"
                        if pooled else "") + ").")
    return " ".join(sentences)


@dataclass
class InputControl:
    """One model answering the same questions with its own scene's visual input and with another scene's
    (`spa3r eval --frames-from other-scene` or `--geometry-from other-scene`). Rows per task with questions, then the
    overall row (macro scores, changed share over all questions); scores and shares are fractions in [0, 1]."""

    model: str
    swapped: str  # "frames" or "geometry"
    rows: list[dict]  # {"task", "n", "own", "other_scene", "changed"}
    difference_interval: tuple[float, float]  # 95 % paired bootstrap interval of overall own − other-scene

    def to_dict(self) -> dict:
        return {"model": self.model, "swapped": self.swapped, "rows": self.rows,
                "difference_interval": list(self.difference_interval)}  # fmt: skip

    @property
    def difference(self) -> float:
        """Overall score with its own input minus with another scene's."""
        return self.rows[-1]["own"] - self.rows[-1]["other_scene"]

    def verdict(self) -> str:
        overall, (low, high) = self.rows[-1], self.difference_interval
        difference = 100 * self.difference
        if overall["changed"] == 0:
            return (f"{self.model} gives the same answer to every question whatever scene's {self.swapped} it gets: "
                    f"it does not use its {self.swapped}.")
        if low > 0:
            return (f"{self.model} uses its {self.swapped}: another scene's cost it {difference:.1f} points overall "
                    f"(95 % interval {100 * low:.1f} to {100 * high:.1f}).")
        return (f"{self.model}'s answers depend on its {self.swapped} ({_share(overall['changed'])} change with "
                f"another scene's), but not for the better: own minus another scene's overall {difference:+.1f} "
                f"points (95 % interval {100 * low:+.1f} to {100 * high:+.1f}).")


def input_control(model: str, swapped: str, own: list[dict], other_scene: list[dict], *, resamples: int = 2000,
                  seed: int = 0) -> InputControl:  # fmt: skip
    """Compare a model's prediction records with its own scenes' `swapped` input and with another scene's (same ids)."""
    own_by_id, other_by_id = {r["id"]: r for r in own}, {r["id"]: r for r in other_scene}
    if set(own_by_id) != set(other_by_id):
        raise ValueError(f"input_control: the two runs answered different questions ({len(own_by_id)} vs "
                         f"{len(other_by_id)}; {len(set(own_by_id) ^ set(other_by_id))} ids in only one)")  # fmt: skip
    ids = sorted(own_by_id, key=str)
    own_scores, other_scores = vsibench.aggregate(own), vsibench.aggregate(other_scene)
    changed = {i: _answer_text(own_by_id[i]) != _answer_text(other_by_id[i]) for i in ids}
    rows = []
    for task in vsibench.TASK_KEYS:
        in_task = [i for i in ids if _task_of(own_by_id[i]["question_type"]) == task]
        if in_task:
            rows.append({"task": vsibench.TASK_DISPLAY_NAMES[task], "n": len(in_task), "own": own_scores[task],
                         "other_scene": other_scores[task],
                         "changed": float(np.mean([changed[i] for i in in_task]))})  # fmt: skip
    rows.append({"task": f"overall (macro mean of {len(rows)} tasks)", "n": len(ids), "own": own_scores[OVERALL],
                 "other_scene": other_scores[OVERALL], "changed": float(np.mean(list(changed.values())))})  # fmt: skip
    differences: dict[str, list[float]] = {}  # question type → paired score differences
    for i in ids:
        difference = own_by_id[i]["score"] - other_by_id[i]["score"]
        differences.setdefault(own_by_id[i]["question_type"], []).append(difference)
    per_type = {t: np.asarray(v) for t, v in differences.items()}
    interval = _bootstrap(per_type, list(vsibench.TASK_KEYS), resamples, seed)[OVERALL]
    return InputControl(model, swapped, rows, interval)


def controls_markdown(controls: list[InputControl]) -> str:
    """A section: per control, the overall scores with own and another scene's input, the paired difference and the
    share of answers that changed (with the tasks where any changed), then each control's verdict."""
    lines = ["| model | input from another scene | own | another scene's | own − another [95 % CI] "
             "| answers changed |", "|---|---|---:|---:|---:|---|"]  # fmt: skip
    for control in controls:
        overall, (low, high) = control.rows[-1], control.difference_interval
        tasks = ", ".join(f"{r['task']} {_share(r['changed'])}" for r in control.rows[:-1] if r["changed"] > 0)
        difference = 100 * control.difference
        lines.append(f"| {control.model} | {control.swapped} | {_pct(overall['own'])} | "
                     f"{_pct(overall['other_scene'])} | {difference:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] | "
                     f"{_share(overall['changed'])}{f' ({tasks})' if tasks else ''} |")  # fmt: skip
    verdicts = "\n".join(f"- {control.verdict()}" for control in controls)
    return (f"## Do the VLMs use what they see? ({controls[0].rows[-1]['n']} questions)\n\nThe same model and "
            "questions, answered again with the frames, or the Spa3R views, of another scene's video (`spa3r eval "
            "--frames-from/--geometry-from other-scene`); overall = macro mean; the interval is a paired bootstrap over "
            "questions for this one trained model, not over training runs."
            f"\n\n" + "\n".join(lines) + f"\n\n{verdicts}\n")


@dataclass
class SeedSpread:
    """The same models and questions evaluated once per training seed (`across_seeds`): per task, each model's score
    at every seed, and at how many seeds the model's interval clears the blind prior. Scores are fractions in [0, 1]."""

    seeds: list[int]
    models: list[str]
    rows: list[dict]  # {"key", "task", "n", "prior", "prior_source", "scores": model → [score per seed],
    #                    "beats_prior": model → count}

    def to_dict(self) -> dict:
        return {"seeds": self.seeds, "models": self.models, "rows": self.rows}

    def difference(self, row: dict) -> np.ndarray:
        """First model minus second, per seed (points ×100)."""
        first, second = (np.asarray(row["scores"][m], dtype=float) for m in self.models[:2])
        return 100 * (first - second)

    def consistent(self, row: dict) -> bool:
        """The difference has one sign at every seed and its mean exceeds twice its standard error."""
        difference = self.difference(row)
        spread = difference.std(ddof=1) / math.sqrt(len(difference))
        return bool((np.all(difference > 0) or np.all(difference < 0)) and abs(difference.mean()) > 2 * spread)

    def markdown(self) -> str:
        a, b = self.models[:2]
        head = ["task", "n", "blind prior", *self.models, f"{a} − {b}, per seed", "mean ± std",
                *(f"{m} beats prior" for m in self.models)]  # fmt: skip
        lines = [f"## Across training seeds ({len(self.seeds)} seeds: {', '.join(map(str, self.seeds))})", "",
                 f"Every model trained again for each seed (a new initialisation and SFT order) on the same rooms, "
                 f"Spa3R and questions; the table above is seed {self.seeds[0]}. Mean ± standard deviation over "
                 f"seeds (n − 1); `beats prior`: seeds at which the model's 95 % interval clears the blind prior.", "",
                 "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(self.models) + 2) + "---|" +
                 "---:|" * (len(self.models) + 1)]  # fmt: skip
        for row in self.rows:
            source = row.get("prior_source")
            cells = [row["task"], str(row["n"]), _pct(row["prior"]) + (f" ({source})" if source else "")]
            cells += [_mean_std(100 * np.asarray(row["scores"][m], dtype=float)) for m in self.models]
            difference = self.difference(row)
            cells += [" / ".join(f"{d:+.1f}" for d in difference), _mean_std(difference, signed=True)]
            cells += [f"{row['beats_prior'][m]}/{len(self.seeds)}" for m in self.models]
            lines.append("| " + " | ".join(cells) + " |")
        overall = self.rows[-1]
        difference = self.difference(overall)
        if self.consistent(overall):
            verdict = (f"{a if difference.mean() > 0 else b} is ahead overall at every seed, by more than twice the "
                       f"standard error ({_mean_std(difference, signed=True)} points).")
        else:
            verdict = (f"Overall, {a} − {b} is {_mean_std(difference, signed=True)} points: within the spread between "
                       f"training seeds, so this run shows no difference between them.")
        tasks = [row["task"] for row in self.rows[:-1] if self.consistent(row)]
        verdict += (f" Tasks where the difference has one sign at every seed and exceeds twice its standard error: "
                    f"{', '.join(tasks) if tasks else 'none'}")
        if tasks:
            verdict += (f" ({len(self.rows) - 1} tasks tested: one passing by chance is not unusual; the input "
                        f"controls say whether {a} uses its inputs at all)")
        verdict += "."
        return "\n".join(lines + ["", verdict]) + "\n"


def across_seeds(reports: dict[int, ResultsReport]) -> SeedSpread:
    """One `ResultsReport` per training seed (same models, same questions) → the spread over seeds (tasks with
    questions, then the overall row). Needs at least two seeds and two models."""
    seeds = list(reports)
    first = reports[seeds[0]]
    if len(seeds) < 2 or len(first.models) < 2:
        raise ValueError(f"across_seeds: needs >= 2 seeds and >= 2 models, got {len(seeds)} seeds, models {first.models}")
    for seed, report in reports.items():
        if report.models != first.models or [(r.key, r.n) for r in report.rows] != [(r.key, r.n) for r in first.rows]:
            raise ValueError(f"across_seeds: seed {seed}'s table has other models or questions than seed {seeds[0]}'s")
    rows = []
    for index, row in enumerate(first.rows):
        if row.n == 0:
            continue
        at_seed = [report.rows[index] for report in reports.values()]
        rows.append({"key": row.key, "task": row.name, "n": row.n, "prior": row.prior, "prior_source": row.prior_source,
                     "scores": {m: [r.scores[m] for r in at_seed] for m in first.models},
                     "beats_prior": {m: sum(row.prior is not None and r.intervals[m][0] > row.prior for r in at_seed)
                                     for m in first.models}})  # fmt: skip
    return SeedSpread(seeds, first.models, rows)


def _share(fraction: float) -> str:
    """A share in whole percent; a non-zero share below 0.5 % reads '< 1 %', not '0 %'."""
    return "< 1 %" if 0 < fraction < 0.005 else f"{100 * fraction:.0f} %"


def _mean_std(values: np.ndarray, signed: bool = False) -> str:
    mean, std = values.mean(), values.std(ddof=1)
    return f"{mean:+.1f} ± {std:.1f}" if signed else f"{mean:.1f} ± {std:.1f}"


def write_report(report: ResultsReport, out_dir: str | Path, title: str) -> dict[str, Path]:
    """`results.md` (table + caption), `results.png` and `results_table.json` in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"md": out_dir / "results.md", "png": out_dir / "results.png", "json": out_dir / "results_table.json"}
    paths["md"].write_text(report.markdown(title) + "\n")
    report.plot(paths["png"], title)
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return paths
