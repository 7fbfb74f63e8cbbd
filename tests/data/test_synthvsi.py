"""SynthVSI records: format, templates, letter balance, and answers recomputed independently.

The recomputation below deliberately does not call ``synthvsi``: distances come from dense surface
sampling instead of exact prism distances, directions from rotating into the viewer's frame instead
of signed angles, and appearance order from the instance PNGs instead of scene.json.
"""

import itertools
import json
import math
import re
from collections import Counter

import numpy as np
import pytest

from modeling_spa3r.data import io as dio
from modeling_spa3r.data.scenes import generate_scene
from modeling_spa3r.data.synthvsi import build_questions, build_sft

FIELDS = {"id", "dataset", "scene_name", "question_type", "question", "ground_truth", "options"}


def _records(root, split):
    return [json.loads(line) for line in (root / f"synthvsi_{split}.jsonl").read_text().splitlines()]


def _surface_samples(obj, spacing=0.01):
    """Points (N, 3) on the six faces of an object's oriented box."""
    size = np.array(obj["size"])
    grids = [np.linspace(-s / 2, s / 2, max(2, int(math.ceil(s / spacing)) + 1)) for s in size]
    faces = []
    for axis in range(3):
        a, b = [g for i, g in enumerate(grids) if i != axis]
        aa, bb = np.meshgrid(a, b)
        for sign in (-1, 1):
            face = np.zeros(aa.shape + (3,))
            face[..., axis] = sign * size[axis] / 2
            face[..., [i for i in range(3) if i != axis]] = np.stack([aa, bb], -1)
            faces.append(face.reshape(-1, 3))
    local = np.concatenate(faces)
    c, s = math.cos(obj["yaw"]), math.sin(obj["yaw"])
    world = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]], 1)
    return world + np.array(obj["center"])


def _point_box_distance(points, obj):
    c, s = math.cos(obj["yaw"]), math.sin(obj["yaw"])
    rel = points - np.array(obj["center"])
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
    return np.linalg.norm(np.maximum(np.abs(local) - np.array(obj["size"]) / 2, 0), axis=1)


def _sampled_distance(a, b):
    return min(_point_box_distance(_surface_samples(a), b).min(), _point_box_distance(_surface_samples(b), a).min())


def _category_distance(meta, a, b):
    objs = meta["objects"]
    return min(_sampled_distance(x, y) for x in objs if x["category"] == a for y in objs if y["category"] == b)


def _centre(meta, category):
    (obj,) = [o for o in meta["objects"] if o["category"] == category]
    return np.array(obj["center"][:2])


def _viewer_frame(meta, stand, face, query):
    """Query position in the viewer's frame: +y = facing direction, +x = viewer's right."""
    p, f, q = _centre(meta, stand), _centre(meta, face), _centre(meta, query)
    fwd = (f - p) / np.linalg.norm(f - p)
    right = np.array([fwd[1], -fwd[0]])  # clockwise from forward seen from above (z up)
    d = q - p
    return float(d @ right), float(d @ fwd)


def _first_frames(scene_dir, meta):
    """First frame index per category from the instance PNGs and the stored pixel threshold."""
    threshold = meta["visibility_min_pixels"]
    cat = {o["instance_id"]: o["category"] for o in meta["objects"]}
    first = {}
    for i in range(meta["camera"]["num_frames"]):
        ids, counts = np.unique(dio.read_label(scene_dir / "instance" / f"{i}.png"), return_counts=True)
        for iid, n in zip(ids, counts):
            if iid and n >= threshold:
                first.setdefault(cat[int(iid)], i)
    return first


def _option_text(record):
    return {o[0]: o[3:] for o in record["options"]}[record["ground_truth"]]


def _check(record, meta, scene_dir, first_frames):
    qt, q = record["question_type"], record["question"]
    cats = [o["category"] for o in meta["objects"]]
    if qt == "object_counting":
        (c,) = re.fullmatch(r"How many (.+)\(s\) are in this room\?", q).groups()
        assert int(record["ground_truth"]) == cats.count(c) >= 2
    elif qt == "object_size_estimation":
        (c,) = re.search(r"dimension \(length, width, or height\) of the (.+), measured", q).groups()
        (obj,) = [o for o in meta["objects"] if o["category"] == c]
        assert int(record["ground_truth"]) == round(max(obj["size"]) * 100)
    elif qt == "room_size_estimation":
        assert float(record["ground_truth"]) == pytest.approx(meta["room"]["width"] * meta["room"]["depth"], abs=0.051)
    elif qt == "object_abs_distance":
        a, b = re.search(r"between the (.+) and the (.+) \(in meters\)", q).groups()
        assert float(record["ground_truth"]) == pytest.approx(_category_distance(meta, a, b), abs=0.02)
    elif qt == "object_rel_distance":
        choices, anchor = re.search(r"objects \((.+)\) is the closest to the (.+)\?$", q).groups()
        choices = choices.split(", ")
        assert choices == [o[3:] for o in record["options"]]
        dist = {c: _category_distance(meta, anchor, c) for c in choices}
        assert _option_text(record) == min(dist, key=dist.get)
    elif qt.startswith("object_rel_direction"):
        stand, face, query = re.match(r"If I am standing by the (.+) and facing the (.+), is the (.+?) to ", q).groups()
        x, y = _viewer_frame(meta, stand, face, query)
        answer = _option_text(record)
        if qt.endswith("easy"):
            assert answer == ("right" if x > 0 else "left")
        elif qt.endswith("medium"):
            behind = math.degrees(math.acos(y / math.hypot(x, y))) >= 135
            assert answer == ("back" if behind else "right" if x > 0 else "left")
        else:
            assert answer == ("front" if y > 0 else "back") + "-" + ("right" if x > 0 else "left")
    elif qt == "route_planning":
        start, face, goal = re.match(r"You are a robot beginning at the (.+) facing the (.+)\. You want to navigate "
                                     r"to the (.+?)\. ", q).groups()
        stops = re.findall(r"Go forward until the (.+?)(?: \d+\.|\.)", q)
        assert stops[0] == face and stops[-1] == goal
        pts = [_centre(meta, c) for c in [start] + stops]
        expected = []
        for a, b, c in zip(pts, pts[1:], pts[2:]):
            h, n = (b - a) / np.linalg.norm(b - a), (c - b) / np.linalg.norm(c - b)
            turn = math.degrees(math.acos(np.clip(h @ n, -1, 1)))
            expected.append("Turn Back" if turn >= 135 else "Turn Left" if h[0] * n[1] - h[1] * n[0] > 0 else "Turn Right")
        assert _option_text(record) == ", ".join(expected)
    elif qt == "obj_appearance_order":
        (listed,) = re.fullmatch(r"What will be the first-time appearance order of the following categories in the "
                                 r"video: (.+)\?", q).groups()
        order = sorted(listed.split(", "), key=first_frames.__getitem__)
        assert _option_text(record) == ", ".join(order)
    else:
        raise AssertionError(f"unknown question type {qt}")


def test_answers_match_independent_recomputation(synth_root):
    seen = Counter()
    for split in ("train", "val", "test"):
        for record in _records(synth_root, split):
            scene_dir = synth_root / "scenes" / record["scene_name"]
            meta = dio.read_json(scene_dir / "scene.json")
            _check(record, meta, scene_dir, _first_frames(scene_dir, meta))
            seen[record["question_type"]] += 1
    assert len(seen) == 10, seen  # all VSI-Bench question types


def test_records_have_exact_vsibench_fields_and_videos(synth_root):
    ids = []
    for split in ("train", "val", "test"):
        for r in _records(synth_root, split):
            assert set(r) == FIELDS and r["dataset"] == "synthvsi" and isinstance(r["id"], int)
            assert (synth_root / r["dataset"] / f"{r['scene_name']}.mp4").is_file()
            if r["options"] is None:
                assert float(r["ground_truth"]) > 0
            else:
                assert [o[:3] for o in r["options"]] == [f"{ch}. " for ch in "ABCD"[:len(r["options"])]]
                assert r["ground_truth"] in "ABCD"[:len(r["options"])]
                assert len(set(r["options"])) == len(r["options"])
            ids.append(r["id"])
    assert sorted(ids) == list(range(len(ids)))
    summary = dio.read_json(synth_root / "dataset.json")
    seeds = [set(summary["splits"][s].values()) for s in ("train", "val", "test")]
    assert all(seeds) and not any(a & b for a, b in itertools.combinations(seeds, 2))


def test_templates_are_verbatim(synth_root):
    records = [r for s in ("train", "val", "test") for r in _records(synth_root, s)]
    by_type = {r["question_type"]: r for r in records}
    medium = by_type.get("object_rel_direction_medium")
    if medium:
        assert medium["question"].endswith(", right, or back?\nAn object is to my back if I would have to turn at "
                                           "least 135 degrees in order to face it.")
    hard = by_type.get("object_rel_direction_hard")
    if hard:
        assert hard["question"].endswith("to my front-left, front-right, back-left, or back-right?\nThe directions "
                                         "refer to the quadrants of a Cartesian plane (if I am standing at the origin "
                                         "and facing along the positive y-axis).")
    assert by_type["room_size_estimation"]["question"] == (
        "What is the size of this room (in square meters)? If multiple rooms are shown, estimate the size of the "
        "combined space.")
    route = by_type.get("route_planning")
    if route:
        assert "(Note: for each [please fill in], choose either 'turn back,' 'turn left,' or 'turn right.'): 1. Go " \
               "forward until the " in route["question"]
        assert route["question"].endswith(". You have reached the final destination.")


def _fake_metas(n):
    """scene.json-like dicts for many scenes with every object visible at a distinct random frame."""
    metas = []
    for seed in range(n):
        meta = generate_scene(seed).to_json()
        frames = np.random.default_rng(seed).permutation(500)
        for obj, f in zip(meta["objects"], frames):
            obj["first_visible_frame"] = int(f)
        meta["scene_name"] = f"fake_{seed}"
        metas.append(meta)
    return metas


def test_answer_letters_are_balanced_per_type():
    records = build_questions(_fake_metas(40), np.random.default_rng(0))
    for qt in {r["question_type"] for r in records if r["options"]}:
        letters = Counter(r["ground_truth"] for r in records if r["question_type"] == qt)
        n, k = sum(letters.values()), len({len(r["options"]) for r in records if r["question_type"] == qt})
        assert n >= 20, (qt, n)
        share = max(letters.values()) / n
        n_options = max(len(r["options"]) for r in records if r["question_type"] == qt)
        limit = 0.4 if n_options >= 3 else 0.5 + 1 / n  # two-option questions cannot go below 50 %
        assert share <= limit, (qt, letters)
        assert k >= 1


def test_sft_conversations_cover_train_split(synth_root):
    sft = json.loads((synth_root / "sft" / "synthvsi_train_sft.json").read_text())
    train = _records(synth_root, "train")
    assert len(sft) == len(train) > 0
    assert build_sft(train) == sft
    for conv, rec in zip(sft, train):
        human, gpt = conv["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<video>\nThese are frames of a video.\n")
        assert rec["question"] in human["value"] and gpt == {"from": "gpt", "value": rec["ground_truth"]}
        assert conv["video"] == f"synthvsi/{rec['scene_name']}.mp4"
