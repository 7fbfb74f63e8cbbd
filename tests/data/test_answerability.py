"""The perfect perceiver of a question's sampled frames (`frames_ceiling`)."""

import json

import pytest

from modeling_spa3r import vsibench
from modeling_spa3r.data.answerability import best_prior_per_type, frames_ceiling

# 8 frames; 2 sampled frames are 0 and 7, all 8 show everything
OBJECTS = [("chair", [0]), ("chair", [7]), ("chair", [3]), ("table", [0, 1]), ("sofa", [7]), ("lamp", [3]),
           ("bed", [1]), ("door", [0])]  # fmt: skip
WALLS = [[0], [7], [3], [0, 7]]  # the third wall only in frame 3
FALLBACK = {"object_counting": 0.3, "room_size_estimation": 0.25, "object_rel_distance": 0.4,
            "obj_appearance_order": 0.2}  # fmt: skip


def _scene(root, objects=OBJECTS, walls=WALLS):
    meta = {"scene_name": "room", "camera": {"num_frames": 8},
            "objects": [{"instance_id": i + 1, "category": c, "visible_in": v} for i, (c, v) in enumerate(objects)],
            "walls": [{"side": s, "visible_in": v} for s, v in zip(("x=0", "x=width", "y=0", "y=depth"), walls)]}
    (root / "room").mkdir(parents=True, exist_ok=True)
    (root / "room" / "scene.json").write_text(json.dumps(meta))
    return root


def _record(i, question_type, question, ground_truth, options=None):
    return {"id": i, "scene_name": "room", "question_type": question_type, "question": question,
            "ground_truth": ground_truth, "options": options}  # fmt: skip


RECORDS = [
    _record(0, "object_counting", "How many chair(s) are in this room?", "3"),
    _record(1, "room_size_estimation", "What is the size of this room (in square meters)?", "20.0"),
    _record(2, "object_rel_distance", "Measuring from the closest point of each object, which of these objects "
            "(sofa, lamp, bed) is the closest to the table?", "A", ["A. sofa", "B. lamp", "C. bed"]),
    _record(3, "object_rel_distance", "Measuring from the closest point of each object, which of these objects "
            "(sofa, door) is the closest to the table?", "B", ["A. sofa", "B. door"]),
    _record(4, "obj_appearance_order", "What will be the first-time appearance order of the following categories "
            "in the video: sofa, table, bed, lamp?", "D",
            ["A. table, bed, sofa, lamp", "B. bed, table, sofa, lamp", "C. sofa, table, bed, lamp",
             "D. table, bed, lamp, sofa"]),
]  # fmt: skip


def test_two_frames_answer_what_they_show(tmp_path):
    ceiling = frames_ceiling(RECORDS, _scene(tmp_path), 2, FALLBACK)
    # frames 0 and 7 show two of the three chairs, not the third wall, not the lamp or the bed
    assert ceiling.answerable == {"object_counting": 0.0, "room_size_estimation": 0.0, "object_rel_distance": 0.5,
                                  "obj_appearance_order": 0.0}  # fmt: skip
    assert ceiling.per_type["object_counting"] == 0.3  # the prior's
    assert ceiling.per_type["room_size_estimation"] == 0.25
    assert ceiling.per_type["object_rel_distance"] == pytest.approx((0.4 + 1.0) / 2)
    # seen first: the table (frame 0), then the sofa (frame 7); the options with the table before the sofa: A, B, D
    assert ceiling.per_type["obj_appearance_order"] == pytest.approx(1 / 3)


def test_every_frame_answers_everything(tmp_path):
    ceiling = frames_ceiling(RECORDS, _scene(tmp_path), 8, FALLBACK)
    assert set(ceiling.answerable.values()) == {1.0}
    assert set(ceiling.per_type.values()) == {1.0}
    assert ceiling.tasks["overall"] == 1.0


def test_ties_in_first_appearance_leave_several_options(tmp_path):
    objects = [("table", [0]), ("bed", [2]), ("lamp", [5]), ("sofa", [5])]
    ceiling = frames_ceiling([RECORDS[4]], _scene(tmp_path, objects), 8, FALLBACK)
    # the lamp and the sofa first appear together: the truth D (..., lamp, sofa) and A (..., sofa, lamp) both fit
    assert ceiling.per_type["obj_appearance_order"] == 0.5 and ceiling.answerable["obj_appearance_order"] == 0.0


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="no fallback .*object_counting"):
        frames_ceiling(RECORDS, _scene(tmp_path), 2, {})
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        frames_ceiling(RECORDS, _scene(tmp_path), 0, FALLBACK)
    with pytest.raises(FileNotFoundError, match=r"other/scene.json not found \(question 0\)"):
        frames_ceiling([dict(RECORDS[0], scene_name="other")], tmp_path, 2, FALLBACK)
    meta = json.loads((tmp_path / "room" / "scene.json").read_text())
    del meta["walls"]
    (tmp_path / "room" / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"'room': scene.json has no per-frame visibility.*`spa3r synth`"):
        frames_ceiling(RECORDS, tmp_path, 2, FALLBACK)


def test_rendered_rooms_answer_every_question_from_all_their_frames(synth_root):
    """SynthVSI asks only what its video shows: with every frame the perceiver is perfect; with fewer, it is not."""
    records = [json.loads(line) for split in ("train", "val", "test")
               for line in (synth_root / f"synthvsi_{split}.jsonl").read_text().splitlines()]  # fmt: skip
    fallback = dict.fromkeys(vsibench.QUESTION_TYPES, 0.0)
    frames = json.loads(next((synth_root / "scenes").iterdir()).joinpath("scene.json").read_text())["camera"]
    full = frames_ceiling(records, synth_root / "scenes", frames["num_frames"], fallback)
    assert set(full.per_type.values()) == {1.0}
    few = frames_ceiling(records, synth_root / "scenes", 2, fallback)
    assert few.tasks["overall"] < 1.0


def test_fallback_is_the_best_of_every_fit_and_prior():
    split = {"chance": {"a": 0.9}, "frequent": {"a": 0.2, "b": 0.5}, "text": {"a": 0.3, "b": 0.1}}
    pool = {"chance": {"a": 0.9}, "frequent": {"a": 0.25}, "text": {"a": 0.4, "c": 0.7}}
    assert best_prior_per_type([split, pool]) == {"a": 0.4, "b": 0.5, "c": 0.7}  # chance is not a prior
