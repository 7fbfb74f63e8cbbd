"""SynthVSI records: VSI-Bench format and templates (checked against the spec), type mix, answer-text
balance, and every answer and ambiguity filter recomputed independently of the generator.

The recomputation deliberately does not call ``synthvsi``: distances come from dense surface
sampling instead of exact prism distances, directions from rotating into the viewer's frame instead
of signed angles, route legs from points tested in each object's own frame, and appearance order
(for rendered scenes) from the instance PNGs instead of scene.json.
"""

import itertools
import json
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from modeling_spa3r.data import io as dio
from modeling_spa3r.data.render import WALL_SIDES
from modeling_spa3r.data.scenes import generate_scene
from modeling_spa3r.data.synthvsi import build_questions, build_sft, question_pool, type_quotas

FIELDS = {"id", "dataset", "scene_name", "question_type", "question", "ground_truth", "options"}
SPEC = Path(os.environ.get("SPA3R_SPEC_DIR", Path(__file__).resolve().parents[3] / "shared" / "spec")) / "vsibench.md"
#: VSI-Bench full-set counts per type, as listed in the spec (§2).
VSIBENCH_COUNTS = {"object_counting": 565, "object_abs_distance": 834, "object_size_estimation": 953,
                   "room_size_estimation": 288, "object_rel_distance": 710, "object_rel_direction_easy": 217,
                   "object_rel_direction_medium": 378, "object_rel_direction_hard": 373, "route_planning": 194,
                   "obj_appearance_order": 618}
FAKE_FRAMES = 500


def _records(root, split):
    return [json.loads(line) for line in (root / f"synthvsi_{split}.jsonl").read_text().splitlines()]


def _surface_samples(obj, spacing=0.02):
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


def _to_local(points, obj):
    c, s = math.cos(obj["yaw"]), math.sin(obj["yaw"])
    rel = points - np.array(obj["center"])[: points.shape[1]]
    xy = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], 1)
    return np.concatenate([xy, rel[:, 2:]], 1)


def _point_box_distance(points, obj):
    return np.linalg.norm(np.maximum(np.abs(_to_local(points, obj)) - np.array(obj["size"]) / 2, 0), axis=1)


def _sampled_distance(a, b):
    return min(_point_box_distance(_surface_samples(a), b).min(), _point_box_distance(_surface_samples(b), a).min())


SAMPLING_TOL = 0.02  # m; the surface sampling over-estimates distances by at most ~0.014 m


def _category_distance(meta, a, b):
    objs = meta["objects"]
    return min(_sampled_distance(x, y) for x in objs if x["category"] == a for y in objs if y["category"] == b)


def _the(meta, category):
    (obj,) = [o for o in meta["objects"] if o["category"] == category]
    return obj


def _centre(meta, category):
    return np.array(_the(meta, category)["center"][:2])


def _viewer_frame(meta, stand, face, query):
    """Query position in the viewer's frame: +y = facing direction, +x = viewer's right."""
    p, f, q = _centre(meta, stand), _centre(meta, face), _centre(meta, query)
    fwd = (f - p) / np.linalg.norm(f - p)
    right = np.array([fwd[1], -fwd[0]])  # clockwise from forward seen from above (z up)
    d = q - p
    return float(d @ right), float(d @ fwd)


def _first_frames_from_pngs(scene_dir, meta):
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


def _leg_blocked(meta, a, b):
    """Whether the straight walk between two objects' centres crosses another floor object's box."""
    ends = {a["instance_id"], b["instance_id"], a["support"], b["support"]}
    pa, pb = np.array(a["center"][:2]), np.array(b["center"][:2])
    points = pa + np.linspace(0, 1, 400)[:, None] * (pb - pa)
    for obj in meta["objects"]:
        if obj["support"] == 0 and obj["instance_id"] not in ends:
            if (np.abs(_to_local(points, obj)) <= np.array(obj["size"][:2]) / 2).all(1).any():
                return True
    return False


def _check(record, meta, first_frames):
    """Recompute the answer of one record and check VSI-Bench's ambiguity filters for its type."""
    qt, q, gt = record["question_type"], record["question"], record["ground_truth"]
    cats = Counter(o["category"] for o in meta["objects"])
    visible = {c for c in cats if all(o["first_visible_frame"] is not None
                                      for o in meta["objects"] if o["category"] == c)}
    if qt == "object_counting":
        (c,) = re.fullmatch(r"How many (.+)\(s\) are in this room\?", q).groups()
        assert re.fullmatch(r"\d+", gt) and int(gt) == cats[c] >= 2 and c in visible
    elif qt == "object_size_estimation":
        (c,) = re.search(r"dimension \(length, width, or height\) of the (.+), measured", q).groups()
        assert re.fullmatch(r"\d+", gt) and int(gt) == round(max(_the(meta, c)["size"]) * 100) and c in visible
    elif qt == "room_size_estimation":
        assert re.fullmatch(r"\d+\.\d", gt)
        assert float(gt) == pytest.approx(meta["room"]["width"] * meta["room"]["depth"], abs=0.05 + 1e-9)
    elif qt == "object_abs_distance":
        a, b = re.search(r"between the (.+) and the (.+) \(in meters\)", q).groups()
        d = _category_distance(meta, a, b)
        assert re.fullmatch(r"\d+\.\d", gt) and cats[a] == cats[b] == 1 and {a, b} <= visible
        assert abs(float(gt) - d) <= 0.05 + SAMPLING_TOL and d >= 0.2
    elif qt == "object_rel_distance":
        choices, primary = re.search(r"objects \((.+)\) is the closest to the (.+)\?\n", q).groups()
        choices = choices.split(", ")
        assert choices == [o[3:] for o in record["options"]] and cats[primary] == 1
        dist = sorted((_category_distance(meta, primary, c), c) for c in choices)
        assert _option_text(record) == dist[0][1]
        assert dist[1][0] - dist[0][0] >= 0.15 - SAMPLING_TOL and dist[0][0] >= 0.15 - SAMPLING_TOL
    elif qt.startswith("object_rel_direction"):
        stand, face, query = re.match(r"If I am standing by the (.+) and facing the (.+), is the (.+?) to ", q).groups()
        assert cats[stand] == cats[face] == cats[query] == 1
        for x, y in itertools.combinations((stand, face, query), 2):
            assert 0.3 - SAMPLING_TOL <= _category_distance(meta, x, y) <= 5.0 + SAMPLING_TOL
        x, y = _viewer_frame(meta, stand, face, query)
        turn = math.degrees(math.atan2(x, y))  # clockwise from the facing direction
        answer = _option_text(record)
        if qt.endswith("easy"):
            assert y > 0 and 10 <= abs(turn) <= 80  # in front, away from straight ahead and from the sides
            assert answer == ("right" if x > 0 else "left")
        elif qt.endswith("medium"):
            assert abs(turn) >= 10 and abs(abs(turn) - 135) >= 10
            assert answer == ("back" if abs(turn) >= 135 else "right" if x > 0 else "left")
        else:
            assert all(abs(abs(turn) - b) >= 10 for b in (0, 90, 180))
            assert answer == ("front" if y > 0 else "back") + "-" + ("right" if x > 0 else "left")
    elif qt == "route_planning":
        start, face, goal = re.match(r"You are a robot beginning at the (.+) facing the (.+)\. You want to navigate "
                                     r"to the (.+?)\. ", q).groups()
        stops = re.findall(r"Go forward until the (.+?)(?: \d+\.|\.)", q)
        assert stops[0] == face and stops[-1] == goal
        names = [start] + stops
        for x, y in zip(names, names[1:]):
            assert not _leg_blocked(meta, _the(meta, x), _the(meta, y)), (x, y)
        pts = [_centre(meta, c) for c in names]
        expected = []
        for a, b, c in zip(pts, pts[1:], pts[2:]):
            h, n = (b - a) / np.linalg.norm(b - a), (c - b) / np.linalg.norm(c - b)
            turn = math.degrees(math.acos(np.clip(h @ n, -1, 1)))
            left = h[0] * n[1] - h[1] * n[0] > 0
            expected.append("Turn Back" if turn >= 135 else "Turn Left" if left else "Turn Right")
        assert _option_text(record) == ", ".join(expected)
    elif qt == "obj_appearance_order":
        (listed,) = re.fullmatch(r"What will be the first-time appearance order of the following categories in the "
                                 r"video: (.+)\?", q).groups()
        order = sorted(listed.split(", "), key=first_frames.__getitem__)
        assert _option_text(record) == ", ".join(order)
        step = (meta["camera"]["num_frames"] - 1) / 31  # one step of a 32-frame uniform sampling
        assert all(first_frames[b] - first_frames[a] >= step for a, b in zip(order, order[1:]))
    else:
        raise AssertionError(f"unknown question type {qt}")


def _fake_metas(n, first_seed=0):
    """scene.json-like dicts for many scenes with every object visible at a distinct random frame."""
    metas = []
    for seed in range(first_seed, first_seed + n):
        meta = generate_scene(seed).to_json()
        frames = np.random.default_rng(seed).permutation(FAKE_FRAMES)
        for obj, f in zip(meta["objects"], frames):
            obj["first_visible_frame"] = int(f)
        meta["scene_name"] = f"fake_{seed}"
        meta["camera"] = {"num_frames": FAKE_FRAMES}
        meta["walls"] = [{"side": side, "visible_in": [0]} for side in WALL_SIDES]
        metas.append(meta)
    return metas


def test_room_size_is_asked_only_where_every_wall_is_in_the_video():
    metas = _fake_metas(12)
    for meta in metas[::2]:
        meta["walls"][1]["visible_in"] = []
    asked = {r["scene_name"] for r in question_pool(metas, np.random.default_rng(0))
             if r["question_type"] == "room_size_estimation"}  # fmt: skip
    assert asked == {meta["scene_name"] for meta in metas[1::2]}
    del metas[0]["walls"]
    with pytest.raises(ValueError, match=r"'fake_0': scene.json has no 'walls'.*`spa3r synth`"):
        question_pool(metas, np.random.default_rng(0))


@pytest.fixture(scope="module")
def many_rooms():
    """Questions of 60 unrendered rooms (visibility stubbed) and their scene dicts by name."""
    metas = _fake_metas(60)
    return build_questions(metas, np.random.default_rng(0)), {m["scene_name"]: m for m in metas}


def test_answers_match_independent_recomputation(synth_root):
    seen = Counter()
    for split in ("train", "val", "test"):
        for record in _records(synth_root, split):
            scene_dir = synth_root / "scenes" / record["scene_name"]
            meta = dio.read_json(scene_dir / "scene.json")
            _check(record, meta, _first_frames_from_pngs(scene_dir, meta))
            seen[record["question_type"]] += 1
    assert len(seen) >= 8, seen  # three small rendered rooms; many_rooms covers every type


def test_answers_and_filters_on_many_rooms(many_rooms):
    records, metas = many_rooms
    seen = Counter()
    for record in records:
        meta = metas[record["scene_name"]]
        first = {}
        for o in meta["objects"]:
            first[o["category"]] = min(first.get(o["category"], FAKE_FRAMES), o["first_visible_frame"])
        _check(record, meta, first)
        seen[record["question_type"]] += 1
    assert len(seen) == 10 and min(seen.values()) >= 20, seen


def _spec_templates():
    if not SPEC.is_file():
        pytest.skip(f"VSI-Bench spec not found at {SPEC} (set SPA3R_SPEC_DIR)")
    text = SPEC.read_text().split("## 9.")[1]
    rows = re.findall(r"^\| `(\w+)` \| `(.+?)` \|", text, re.M)
    return {qt: template.replace("\\n", "\n") for qt, template in rows}


def _template_regex(template):
    pattern, seen = "", {}
    for i, part in enumerate(re.split(r"\{([^}]+)\}", template)):
        if i % 2 == 0:
            pattern += re.escape(part)
        elif part in seen:
            pattern += f"(?P={seen[part]})"
        else:
            seen[part] = f"s{len(seen)}"
            pattern += f"(?P<{seen[part]}>.+?)"
    return re.compile(pattern + r"\Z", re.S)


def test_templates_match_the_spec_word_for_word(many_rooms, synth_root):
    templates = _spec_templates()
    assert set(templates) == set(VSIBENCH_COUNTS)
    regexes = {qt: _template_regex(t) for qt, t in templates.items()}
    records = many_rooms[0] + [r for s in ("train", "val", "test") for r in _records(synth_root, s)]
    for r in records:
        assert regexes[r["question_type"]].match(r["question"]), (r["question_type"], r["question"])
    room = next(r for r in records if r["question_type"] == "room_size_estimation")
    assert room["question"] == templates["room_size_estimation"]
    route = next(r for r in records if r["question_type"] == "route_planning")
    steps = re.search(r"'turn right\.'\): (.+) You have reached", route["question"]).group(1)
    assert re.fullmatch(r"1\. Go forward until the [^.]+( \d+\. \[please fill in\] \d+\. Go forward until the "
                        r"[^.]+)+\.", steps), steps


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
    for split in ("train", "val", "test"):
        assert summary["question_types"][split] == dict(sorted(Counter(
            r["question_type"] for r in _records(synth_root, split)).items()))


def test_type_mix_follows_vsibench_proportions(many_rooms):
    records = many_rooms[0]
    counts = Counter(r["question_type"] for r in records)
    total, vsi_total = len(records), sum(VSIBENCH_COUNTS.values())
    for qt, n in VSIBENCH_COUNTS.items():
        assert abs(counts[qt] - total * n / vsi_total) <= 1.0, (qt, counts[qt], total * n / vsi_total)
    # one room size question per room at most, and rooms are the limit: ~18 questions per room
    assert counts["room_size_estimation"] <= 60 and total >= 60 * 15


def test_quotas_scale_to_the_scarcest_pool():
    pools = {qt: 1000 for qt in VSIBENCH_COUNTS} | {"route_planning": 19, "obj_appearance_order": 3}
    quotas = type_quotas(pools)
    vsi_total = sum(VSIBENCH_COUNTS.values())
    assert quotas["route_planning"] == 19 and quotas["obj_appearance_order"] == 3  # tiny pools give what they have
    size = 19 / (194 / vsi_total)  # the route pool limits the set
    for qt, n in VSIBENCH_COUNTS.items():
        if qt != "obj_appearance_order":
            assert abs(quotas[qt] - size * n / vsi_total) < 1, qt
    assert abs(sum(quotas.values()) - 3 - size * (1 - 618 / vsi_total)) <= 1
    assert type_quotas({qt: 0 for qt in VSIBENCH_COUNTS}) == {qt: 0 for qt in VSIBENCH_COUNTS}


def test_answer_texts_are_balanced(many_rooms):
    records = many_rooms[0]
    by_type = defaultdict(list)
    for r in records:
        if r["options"]:
            by_type[r["question_type"]].append(r)
    allowed = {"object_rel_direction_easy": ["left", "right"],
               "object_rel_direction_medium": ["left", "right", "back"],
               "object_rel_direction_hard": ["front-left", "front-right", "back-left", "back-right"]}
    for qt, words in allowed.items():
        answers = Counter(_option_text(r) for r in by_type[qt])
        assert set(answers) == set(words)
        for w in words:  # every allowed answer text about equally often
            assert abs(answers[w] / len(by_type[qt]) - 1 / len(words)) <= 0.05, (qt, answers)
    for qt, recs in by_type.items():  # no option text is right much more (or less) often than chance
        shown, right = Counter(), Counter()
        for r in recs:
            for o in r["options"]:
                shown[o[3:]] += 1
            right[_option_text(r)] += 1
        for text, n in shown.items():
            if n >= 20:
                chance = np.mean([1 / len(r["options"]) for r in recs if text in (o[3:] for o in r["options"])])
                assert abs(right[text] / n - chance) <= 0.15, (qt, text, right[text], n)
    before = Counter()
    for r in by_type["obj_appearance_order"]:
        order = _option_text(r).split(", ")
        before.update(itertools.combinations(order, 2))
    for (a, b), n in before.items():  # no category reliably appears before another
        total = n + before[(b, a)]
        if total >= 12:
            assert 0.2 <= n / total <= 0.8, (a, b, n, total)


def test_answer_letters_are_balanced_per_type(many_rooms):
    records = many_rooms[0]
    for qt in {r["question_type"] for r in records if r["options"]}:
        letters = Counter(r["ground_truth"] for r in records if r["question_type"] == qt)
        n = sum(letters.values())
        n_options = max(len(r["options"]) for r in records if r["question_type"] == qt)
        limit = 0.4 if n_options >= 3 else 0.5 + 1 / n  # two-option questions cannot go below 50 %
        assert max(letters.values()) / n <= limit, (qt, letters)


def test_questions_are_deterministic(many_rooms):
    metas = list(many_rooms[1].values())[:10]
    a = build_questions(metas, np.random.default_rng(3))
    assert a == build_questions(metas, np.random.default_rng(3)) != build_questions(metas, np.random.default_rng(4))


def test_sft_conversations_cover_train_split(synth_root):
    sft = json.loads((synth_root / "sft" / "synthvsi_train_sft.json").read_text())
    train = _records(synth_root, "train")
    assert len(sft) == len(train) > 0
    assert build_sft(train) == sft
    for split in ("val", "test"):  # held-out conversations (SFT's held-out loss), one per question of the split
        held_out = _records(synth_root, split)
        path = synth_root / "sft" / f"synthvsi_{split}_sft.json"
        assert json.loads(path.read_text()) == build_sft(held_out) if held_out else not path.exists()
    for conv, rec in zip(sft, train):
        human, gpt = conv["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<video>\nThese are frames of a video.\n")
        assert rec["question"] in human["value"] and gpt == {"from": "gpt", "value": rec["ground_truth"]}
        assert conv["video"] == f"synthvsi/{rec['scene_name']}.mp4"
