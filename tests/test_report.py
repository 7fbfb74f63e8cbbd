"""The evidence-carrying results table (modeling_spa3r/report.py) on hand-made predictions."""

import pytest

from modeling_spa3r import vsibench
from modeling_spa3r.data.answerability import FramesCeiling
from modeling_spa3r.report import across_seeds, build_report, write_report

PRIORS = {  # BlindPriors.tasks layout: prior → task key → score
    "chance": {"object_counting_MRA:.5:.95:.05": 0.1, "route_planning_accuracy": 0.25},
    "frequent": {"object_counting_MRA:.5:.95:.05": 0.3, "route_planning_accuracy": 0.25},
    "text": {"object_counting_MRA:.5:.95:.05": 0.2, "route_planning_accuracy": 0.4},
}
COUNT, ROUTE = "object_counting_MRA:.5:.95:.05", "route_planning_accuracy"


def _records(counting, routes):
    """counting: (answer, score) per object-counting question; routes: (answer, score) per route question."""
    rows = [("object_counting", i, a, s) for i, (a, s) in enumerate(counting)]
    rows += [("route_planning", i, a, s) for i, (a, s) in enumerate(routes)]
    return [{"id": f"{t}-{i}", "question_type": t, "answer": a, "score": s} for t, i, a, s in rows]


COLLAPSING = _records([("2", 1.0), ("2", 1.0), ("2", 0.5), ("2", 0.0)], [("A", 1.0), ("A", 1.0)])
VARIED = _records([("1", 1.0), ("2", 1.0), ("3", 1.0), ("3", 1.0)], [("A", 0.0), ("B", 1.0)])


def test_rows_counts_scores_collapse_and_empty_tasks():
    report = build_report({"geo": COLLAPSING, "plain": VARIED}, PRIORS, resamples=2000, seed=0)
    assert [row.key for row in report.rows] == [*vsibench.TASK_KEYS, "overall"]  # every task shown
    rows = {row.key: row for row in report.rows}
    assert (rows[COUNT].n, rows[ROUTE].n, rows["overall"].n) == (4, 2, 6)
    assert all(rows[k].n == 0 and rows[k].scores == {"geo": None, "plain": None}
               for k in vsibench.TASK_KEYS if k not in (COUNT, ROUTE))  # fmt: skip
    assert rows[COUNT].scores == {"geo": 0.625, "plain": 1.0}
    assert rows[ROUTE].scores == {"geo": 1.0, "plain": 0.5}
    assert rows["overall"].scores == {"geo": (0.625 + 1.0) / 2, "plain": 0.75}  # macro mean over 2 tasks
    assert rows["overall"].name == "overall (macro mean of 2 tasks)"
    assert (rows[COUNT].chance, rows[COUNT].prior, rows[ROUTE].prior) == (0.1, 0.3, 0.4)  # best of frequent, text
    assert rows[COUNT].top_answer_share == {"geo": 1.0, "plain": 0.5} and rows[COUNT].top_answer["geo"] == "2"
    assert rows[ROUTE].top_answer_share == {"geo": 1.0, "plain": 0.5}
    # a constant score has a zero-width interval; {0, 1} on two questions spans [0, 1]
    assert rows[ROUTE].intervals["geo"] == (1.0, 1.0) and rows[COUNT].intervals["plain"] == (1.0, 1.0)
    assert rows[ROUTE].intervals["plain"] == (0.0, 1.0)
    low, high = rows[COUNT].intervals["geo"]
    assert 0.0 <= low < 0.625 < high <= 1.0


def test_caption_says_collapse_and_prior_plainly():
    report = build_report({"geo": COLLAPSING, "plain": VARIED}, PRIORS, resamples=2000, seed=0)
    caption = report.caption
    assert "; COLLAPSED (one answer > 80 %) on Obj. Count (100 % '2'), Route Plan (100 % 'A')." in caption
    assert caption.count("COLLAPSED") == 1  # geo only
    # plain's route interval [0, 1] does not clear the 0.4 prior; its counting interval [1, 1] clears 0.3
    assert "plain beats the blind prior overall; beats it on 1/2 tasks (Obj. Count); does not beat it on Route Plan" in caption
    assert "No questions for: Abs. Dist., Obj. Size, Room Size, Rel. Dist., Rel. Dir., Appr. Order." in caption
    table = report.markdown("t")
    assert "| Abs. Dist. | 0 | no questions | - | - |" in table
    assert "| Obj. Count | 4 | 10.0 | 30.0 | 62.5 [" in table and "100 % (2) **collapsed**" in table
    assert "| overall (macro mean of 2 tasks) | 6 |" in table


def test_pool_priors_raise_the_bar_where_higher_and_are_marked():
    pool = {"frequent": {COUNT: 0.25, ROUTE: 0.5}, "text": {COUNT: 0.28, ROUTE: 0.75}}  # route: 0.75 > 0.4
    report = build_report({"geo": COLLAPSING, "plain": VARIED}, PRIORS, resamples=2000, seed=0, pool_priors=pool)
    rows = {row.key: row for row in report.rows}
    assert (rows[COUNT].prior, rows[COUNT].prior_source) == (0.3, None)  # the split's 0.3 beats the pool's 0.28
    assert (rows[ROUTE].prior, rows[ROUTE].prior_source) == (0.75, "pool")
    assert rows["overall"].prior == pytest.approx((0.3 + 0.75) / 2)
    table = report.markdown("t")
    assert "| Obj. Count | 4 | 10.0 | 30.0 | 62.5 [" in table and "| Route Plan | 2 | 25.0 | 75.0 (pool) | 100.0 [" in table
    assert "marked (pool): fitted on every candidate question of the train rooms, where that is higher" in report.caption
    # geo's route interval [1, 1] clears 0.75; with the split's priors alone the caption has no pool clause
    assert "geo beats the blind prior overall; beats it on 1/2 tasks (Route Plan); does not beat it on Obj. Count" in report.caption
    assert "(pool)" not in build_report({"geo": COLLAPSING}, PRIORS, resamples=200).caption
    again = build_report({"geo": COLLAPSING, "plain": VARIED}, PRIORS, resamples=500, seed=1, pool_priors=pool)
    assert "| Route Plan | 2 | 75.0 (pool) |" in across_seeds({0: report, 1: again}).markdown()


def test_frames_ceiling_is_a_column_a_tick_and_a_caption_sentence(tmp_path):
    ceiling = FramesCeiling(4, {}, {}, {COUNT: 0.32, ROUTE: 0.9, "overall": 0.61})
    report = build_report({"geo": COLLAPSING, "plain": VARIED}, PRIORS, resamples=200, ceiling=ceiling)
    rows = {row.key: row for row in report.rows}
    assert (rows[COUNT].ceiling, rows[ROUTE].ceiling, rows["overall"].ceiling) == (0.32, 0.9, 0.61)
    table = report.markdown("t")
    assert "| task | n | chance | blind prior | ceiling (4 frames) | geo [95 % CI] |" in table
    assert "| Obj. Count | 4 | 10.0 | 30.0 | 32.0 | 62.5 [" in table and "| Route Plan | 2 | 25.0 | 40.0 | 90.0 | 100.0 [" in table
    assert "| Abs. Dist. | 0 | no questions |" + " - |" * 6 in table
    # counting's frames add 2 points to its 30.0 prior, the routes' 50
    assert ("A perfect perceiver of the 4 frames each model sees would score 61.0 overall (ceiling); on Obj. Count "
            "(32.0 against 30.0) those frames add less than 5 points to the blind prior, so no model can be expected "
            "to beat it there.") in report.caption  # fmt: skip
    assert "ceiling" not in build_report({"geo": COLLAPSING}, PRIORS, resamples=200).markdown("t")
    paths = write_report(report, tmp_path, "with a ceiling")
    assert '"ceiling_frames": 4' in paths["json"].read_text() and '"ceiling": 0.9' in paths["json"].read_text()


def test_empty_answers_count_as_one_collapsed_answer():
    silent = [{**r, "answer": None, "output": "", "score": 0.0} for r in VARIED]
    report = build_report({"silent": silent}, PRIORS, resamples=200)
    row = report.rows[0]
    assert row.top_answer_share["silent"] == 1.0 and row.top_answer["silent"] == "(no answer)"
    assert "silent does NOT beat the blind prior overall" in report.caption


def test_bootstrap_is_seeded():
    first = build_report({"geo": COLLAPSING}, PRIORS, resamples=500, seed=3)
    again = build_report({"geo": COLLAPSING}, PRIORS, resamples=500, seed=3)
    assert [r.intervals for r in first.rows] == [r.intervals for r in again.rows]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="different questions"):
        build_report({"geo": COLLAPSING, "plain": VARIED[:-1]}, PRIORS)
    with pytest.raises(ValueError, match="resamples must be >= 100"):
        build_report({"geo": COLLAPSING}, PRIORS, resamples=10)
    partial = [{"id": "d", "question_type": "object_rel_direction_easy", "answer": "A", "score": 1.0}]
    with pytest.raises(ValueError, match="missing: object_rel_direction_medium"):
        build_report({"geo": partial}, PRIORS)


def test_write_report_files(tmp_path):
    report = build_report({"geo": COLLAPSING, "plain": VARIED}, PRIORS, resamples=200)
    paths = write_report(report, tmp_path, "hand-made")
    assert paths["md"].read_text().startswith("# hand-made\n") and paths["png"].stat().st_size > 10_000
    assert '"collapse_threshold": 0.8' in paths["json"].read_text()


def test_input_control_rows_verdicts_and_section():
    from modeling_spa3r.report import controls_markdown, input_control

    same = input_control("geo", "geometry", COLLAPSING, COLLAPSING)
    assert [(r["task"], r["n"], r["own"], r["other_scene"], r["changed"]) for r in same.rows] == [
        ("Obj. Count", 4, 0.625, 0.625, 0.0), ("Route Plan", 2, 1.0, 1.0, 0.0),
        ("overall (macro mean of 2 tasks)", 6, 0.8125, 0.8125, 0.0)]  # fmt: skip
    assert same.difference_interval == (0.0, 0.0)
    assert same.verdict() == "geo gives the same answer to every question whatever scene's geometry it gets: it does not use its geometry."
    # another scene's frames: every counting answer changes and scores 0; route answers change, scores equal
    worse = _records([("9", 0.0)] * 4, [("B", 1.0), ("B", 1.0)])
    used = input_control("plain", "frames", COLLAPSING, worse)
    assert [r["changed"] for r in used.rows] == [1.0, 1.0, 1.0] and used.rows[-1]["other_scene"] == 0.5
    assert used.difference_interval[0] > 0
    assert used.verdict().startswith("plain uses its frames: another scene's cost it 31.2 points overall (95 % interval ")
    # answers change, scores do not move overall
    shuffled = _records([("1", 1.0), ("1", 1.0), ("1", 0.0), ("1", 0.5)], [("A", 1.0), ("A", 1.0)])
    noise = input_control("geo", "frames", COLLAPSING, shuffled)
    assert noise.rows[0]["changed"] == 1.0 and noise.rows[1]["changed"] == 0.0
    assert noise.rows[-1]["changed"] == pytest.approx(4 / 6)
    assert noise.verdict().startswith("geo's answers depend on its frames (67 % change with another scene's), but not "
                                      "for the better: own minus another scene's overall +0.0 points")  # fmt: skip
    section = controls_markdown([same, used, noise])
    assert section.startswith("## Do the VLMs use what they see? (6 questions)")
    assert "| geo | geometry | 81.2 | 81.2 | +0.0 [+0.0, +0.0] | 0 % |" in section
    assert "| geo | frames | 81.2 | 81.2 | +0.0 [" in section and "| 67 % (Obj. Count 100 %) |" in section
    assert f"- {used.verdict()}" in section


def test_input_control_names_a_share_below_one_percent():
    """One changed answer in 300 is '< 1 %', never '0 %' (which would read as 'does not use it')."""
    from modeling_spa3r.report import controls_markdown, input_control

    own = _records([("2", 1.0)] * 300, [])
    other = _records([("3", 1.0)] + [("2", 1.0)] * 299, [])
    control = input_control("geo", "geometry", own, other)
    assert control.rows[-1]["changed"] == pytest.approx(1 / 300)
    assert control.verdict().startswith("geo's answers depend on its geometry (< 1 % change with another scene's)")
    assert "| +0.0 [+0.0, +0.0] | < 1 % (Obj. Count < 1 %) |" in controls_markdown([control])


def test_input_control_refuses_different_questions():
    from modeling_spa3r.report import input_control

    with pytest.raises(ValueError, match=r"answered different questions \(6 vs 5; 1 ids in only one\)"):
        input_control("geo", "frames", COLLAPSING, COLLAPSING[:-1])


def _scored(counting, routes):
    """Records with the given per-question scores (answers all '1' / 'A')."""
    return _records([("1", s) for s in counting], [("A", s) for s in routes])


def test_across_seeds_spread_difference_and_verdict():
    runs = {0: ([1, 1, 0.5, 0], [1, 1], [1, 1, 1, 1], [0, 1]),  # geo count, geo route, plain count, plain route
            1: ([1, 1, 1, 0], [1, 0], [1, 1, 0, 0], [0, 0]),
            2: ([1, 1, 1, 1], [1, 1], [1, 1, 1, 0], [1, 0])}  # fmt: skip
    reports = {seed: build_report({"geo": _scored(gc, gr), "plain": _scored(pc, pr)}, PRIORS, resamples=500, seed=0)
               for seed, (gc, gr, pc, pr) in runs.items()}  # fmt: skip
    spread = across_seeds(reports)
    assert [row["task"] for row in spread.rows] == ["Obj. Count", "Route Plan", "overall (macro mean of 2 tasks)"]
    route = spread.rows[1]
    assert route["scores"] == {"geo": [1.0, 0.5, 1.0], "plain": [0.5, 0.0, 0.5]}
    assert route["beats_prior"] == {"geo": 2, "plain": 0}  # intervals [1, 1], [0, 1], [1, 1] against a prior of 0.4
    assert spread.difference(spread.rows[-1]).tolist() == pytest.approx([6.25, 37.5, 37.5])
    assert spread.consistent(route) and spread.consistent(spread.rows[-1]) and not spread.consistent(spread.rows[0])
    text = spread.markdown()
    assert "## Across training seeds (3 seeds: 0, 1, 2)" in text
    assert "| Route Plan | 2 | 40.0 | 83.3 ± 28.9 | 33.3 ± 28.9 | +50.0 / +50.0 / +50.0 | +50.0 ± 0.0 | 2/3 | 0/3 |" in text
    assert "| Obj. Count | 4 | 30.0 | 79.2 ± 19.1 | 75.0 ± 25.0 | -37.5 / +25.0 / +25.0 | +4.2 ± 36.1 |" in text
    assert "geo is ahead overall at every seed, by more than twice the standard error (+27.1 ± 18.0 points)." in text
    assert "exceeds twice its standard error: Route Plan (2 tasks tested: one passing by chance is not unusual" in text
    assert spread.to_dict()["seeds"] == [0, 1, 2]
    within = across_seeds({0: reports[0], 1: reports[1]} | {2: build_report(
        {"geo": _scored([1] * 4, [0, 0]), "plain": _scored([1] * 4, [1, 1])}, PRIORS, resamples=500, seed=0)})
    assert "within the spread between training seeds, so this run shows no difference between them" in within.markdown()
    with pytest.raises(ValueError, match="needs >= 2 seeds"):
        across_seeds({0: reports[0]})
    other = build_report({"geo": _scored([1, 1], [1, 1]), "plain": _scored([1, 1], [1, 1])}, PRIORS, resamples=500)
    with pytest.raises(ValueError, match="seed 5's table has other models or questions than seed 0's"):
        across_seeds({0: reports[0], 5: other})


def test_three_models_are_compared_pairwise_and_spread_over_seeds():
    """The demo's third model (the text-only LM): the caption compares every pair, the seeds table shows every model."""
    blind = _records([("2", 1.0), ("2", 1.0), ("2", 1.0), ("2", 1.0)], [("A", 0.0), ("A", 0.0)])
    report = build_report({"geo": COLLAPSING, "plain": VARIED, "text": blind}, PRIORS, resamples=500, seed=0)
    caption = report.caption
    for first, second in (("geo", "plain"), ("geo", "text"), ("plain", "text")):
        assert f"{first} vs {second}: intervals separate in favour of {first} on " in caption
    # route: geo [1, 1] against text [0, 0]; counting: geo's interval reaches text's 1.0, so no separation
    assert "geo vs text: intervals separate in favour of geo on Route Plan, in favour of text on no task" in caption
    assert "| plain [95 % CI] | text [95 % CI] | geo: top answer share |" in report.markdown()
    reports = {seed: build_report({"geo": _scored(gc, [1, 1]), "plain": _scored(pc, [0, 1]), "text": _scored(tc, [0, 0])},
                                  PRIORS, resamples=500, seed=0)
               for seed, (gc, pc, tc) in {0: ([1, 1, 1, 0], [1, 0, 0, 0], [0] * 4),
                                          1: ([1, 1, 0, 0], [1, 1, 0, 0], [1] * 4)}.items()}  # fmt: skip
    text = across_seeds(reports).markdown()
    assert ("| task | n | blind prior | geo | plain | text | geo − plain, per seed | mean ± std | geo beats prior "
            "| plain beats prior | text beats prior |") in text
    assert "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|" in text
    assert "| Obj. Count | 4 | 30.0 | 62.5 ± 17.7 | 37.5 ± 17.7 | 50.0 ± 70.7 | +50.0 / +0.0 | +25.0 ± 35.4 |" in text
