"""SynthVSI: VSI-Bench-style questions with exact answers from synthetic scene geometry.

Records use the VSI-Bench fields exactly: ``id`` (int), ``dataset`` ("synthvsi"), ``scene_name``,
``question_type`` (the ten VSI-Bench labels), ``question``, ``ground_truth`` (option letter, or a
positive decimal number as text) and ``options`` (``["A. ...", ...]`` or ``None``). The video of a
record is ``<root>/synthvsi/<scene_name>.mp4``.

Question texts follow the VSI-Bench templates (paper, Table 4, in the form the released records
use: the relative-direction medium/hard explanations follow the question after a newline).
Answers are computed from ``scene.json``:

* distances are exact closest-point distances between the objects' oriented boxes (metres);
* sizes are the longest box dimension (centimetres); room size is the floor area (m^2);
* directions use the centres of the objects' boxes projected on the floor: "standing by X" = at
  X's centre, "facing Y" = looking at Y's centre; left is counter-clockwise seen from above;
* appearance order uses, per category, the first frame in which any instance covers at least
  ``visibility_min_pixels`` pixels of the instance mask.

Only objects visible in the video are asked about, and only categories whose every instance is
visible; "the X" requires X to be unique in the room. Ambiguous configurations (angles near a
decision boundary, near-equal distances, near-simultaneous appearances) are skipped. The correct
option letter is assigned per question type to the least-used letter so far, so letters are balanced.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

from .scenes import SceneObject, box_distance

LETTERS = "ABCD"
NA_TYPES = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation")
MCA_TYPES = ("object_rel_distance", "object_rel_direction_easy", "object_rel_direction_medium",
             "object_rel_direction_hard", "route_planning", "obj_appearance_order")
QUESTION_TYPES = NA_TYPES + MCA_TYPES

COUNT_TEMPLATE = "How many {category}(s) are in this room?"
ABS_DISTANCE_TEMPLATE = ("Measuring from the closest point of each object, what is the direct distance between "
                         "the {a} and the {b} (in meters)?")
SIZE_TEMPLATE = ("What is the length of the longest dimension (length, width, or height) of the {category}, "
                 "measured in centimeters?")
ROOM_SIZE_TEMPLATE = ("What is the size of this room (in square meters)? If multiple rooms are shown, estimate the "
                      "size of the combined space.")
REL_DISTANCE_TEMPLATE = ("Measuring from the closest point of each object, which of these objects ({choices}) is "
                         "the closest to the {category}?")
DIRECTION_EASY_TEMPLATE = ("If I am standing by the {stand} and facing the {face}, is the {query} to the left or the "
                           "right of the {face}?")
DIRECTION_MEDIUM_TEMPLATE = ("If I am standing by the {stand} and facing the {face}, is the {query} to my left, "
                             "right, or back?\nAn object is to my back if I would have to turn at least 135 degrees "
                             "in order to face it.")
DIRECTION_HARD_TEMPLATE = ("If I am standing by the {stand} and facing the {face}, is the {query} to my front-left, "
                           "front-right, back-left, or back-right?\nThe directions refer to the quadrants of a "
                           "Cartesian plane (if I am standing at the origin and facing along the positive y-axis).")
ROUTE_TEMPLATE = ("You are a robot beginning at the {start} facing the {face}. You want to navigate to the {goal}. "
                  "You will perform the following actions (Note: for each [please fill in], choose either "
                  "'turn back,' 'turn left,' or 'turn right.'): {steps} You have reached the final destination.")
APPEARANCE_TEMPLATE = "What will be the first-time appearance order of the following categories in the video: {choices}?"

MCA_POST = "Answer with the option's letter from the given choices directly."
NA_POST = "Please answer the question using a single word or phrase."

#: Questions of each type drawn per scene at most.
PER_SCENE = {"object_counting": 2, "object_abs_distance": 3, "object_size_estimation": 3, "room_size_estimation": 1,
             "object_rel_distance": 3, "object_rel_direction_easy": 2, "object_rel_direction_medium": 2,
             "object_rel_direction_hard": 2, "route_planning": 2, "obj_appearance_order": 2}

MIN_DISTANCE = 0.2  # m; closer pairs are not asked (answers must be > 0 and readable)
REL_DISTANCE_GAP = 0.15  # m; the closest choice must beat every other choice by this much
ANGLE_MARGIN = 12.0  # degrees kept away from every direction boundary
APPEARANCE_GAP = 3  # frames between consecutive first appearances
ROUTE_TURNS = {"Turn Left": (60.0, 120.0), "Turn Right": (-120.0, -60.0)}
ROUTE_BACK = 150.0  # |angle| at least this -> "Turn Back"


class LetterBalancer:
    """Chooses the correct option's letter: the least used so far for the question type (random ties)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(LETTERS), dtype=np.int64))

    def arrange(self, question_type: str, correct: str, distractors: list[str]) -> tuple[list[str], str]:
        """Options ``["A. ...", ...]`` with ``correct`` at a balanced letter; distractors keep a random order."""
        n = len(distractors) + 1
        counts = self.counts[question_type][:n]
        least = np.nonzero(counts == counts.min())[0]
        slot = int(least[self.rng.integers(len(least))])
        self.counts[question_type][slot] += 1
        order = [distractors[i] for i in self.rng.permutation(len(distractors))]
        order.insert(slot, correct)
        return [f"{LETTERS[i]}. {text}" for i, text in enumerate(order)], LETTERS[slot]


def _as_object(obj: dict) -> SceneObject:
    return SceneObject(obj["instance_id"], obj["category"], np.array(obj["center"], dtype=float),
                       np.array(obj["size"], dtype=float), float(obj["yaw"]), obj["support"])


class _SceneFacts:
    """Derived facts about one scene.json used by all question builders."""

    def __init__(self, meta: dict):
        self.meta = meta
        self.by_category: dict[str, list[dict]] = defaultdict(list)
        for obj in meta["objects"]:
            self.by_category[obj["category"]].append(obj)
        # categories whose every instance appears in the video
        self.askable = sorted(c for c, objs in self.by_category.items()
                              if all(o["first_visible_frame"] is not None for o in objs))
        self.unique = [c for c in self.askable if len(self.by_category[c]) == 1]
        self.boxes = {o["instance_id"]: _as_object(o) for o in meta["objects"]}

    def the(self, category: str) -> dict:
        return self.by_category[category][0]

    def distance(self, a: str, b: str) -> float:
        """Closest-point distance between categories (closest pair of instances)."""
        return min(box_distance(self.boxes[x["instance_id"]], self.boxes[y["instance_id"]])
                   for x in self.by_category[a] for y in self.by_category[b])

    def floor_xy(self, category: str) -> np.ndarray:
        return np.array(self.the(category)["center"][:2], dtype=float)

    def first_frame(self, category: str) -> int:
        return min(o["first_visible_frame"] for o in self.by_category[category])


def signed_angle(facing: np.ndarray, target: np.ndarray) -> float:
    """Angle in degrees from 2-D vector ``facing`` to ``target``; positive = counter-clockwise (left)."""
    cross = facing[0] * target[1] - facing[1] * target[0]
    return math.degrees(math.atan2(cross, float(np.dot(facing, target))))


def _near_any(angle: float, boundaries: tuple[float, ...]) -> bool:
    return any(abs(abs(angle) - b) < ANGLE_MARGIN for b in boundaries)


def direction_easy(angle: float) -> str | None:
    if _near_any(angle, (0.0, 180.0)):
        return None
    return "left" if angle > 0 else "right"


def direction_medium(angle: float) -> str | None:
    if _near_any(angle, (0.0, 135.0, 180.0)) or abs(angle) < 45.0:
        return None  # the three options have no "front"; skip queries ahead of the viewer
    if abs(angle) >= 135.0:
        return "back"
    return "left" if angle > 0 else "right"


def direction_hard(angle: float) -> str | None:
    if _near_any(angle, (0.0, 90.0, 180.0)):
        return None
    return ("front-" if abs(angle) < 90.0 else "back-") + ("left" if angle > 0 else "right")


def route_turn(angle: float) -> str | None:
    """The instruction for a heading change of ``angle`` degrees, or None when it is ambiguous."""
    if abs(angle) >= ROUTE_BACK:
        return "Turn Back"
    for name, (lo, hi) in ROUTE_TURNS.items():
        if lo <= angle <= hi:
            return name
    return None


def _record(meta: dict, dataset: str, question_type: str, question: str, answer: str, options) -> dict:
    return {"id": -1, "dataset": dataset, "scene_name": meta["scene_name"], "question_type": question_type,
            "question": question, "ground_truth": answer, "options": options}


def _format_number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _counting(f: _SceneFacts, rng, bal, dataset):
    cats = [c for c in f.askable if len(f.by_category[c]) >= 2]
    for c in rng.permutation(cats)[:PER_SCENE["object_counting"]]:
        yield _record(f.meta, dataset, "object_counting", COUNT_TEMPLATE.format(category=c),
                      str(len(f.by_category[c])), None)


def _abs_distance(f: _SceneFacts, rng, bal, dataset):
    pairs = [p for p in itertools.combinations(f.unique, 2) if f.distance(*p) >= MIN_DISTANCE]
    for i in rng.permutation(len(pairs))[:PER_SCENE["object_abs_distance"]]:
        a, b = pairs[i] if rng.random() < 0.5 else pairs[i][::-1]
        yield _record(f.meta, dataset, "object_abs_distance", ABS_DISTANCE_TEMPLATE.format(a=a, b=b),
                      _format_number(f.distance(a, b), 2), None)


def _size(f: _SceneFacts, rng, bal, dataset):
    for c in rng.permutation(f.unique)[:PER_SCENE["object_size_estimation"]]:
        yield _record(f.meta, dataset, "object_size_estimation", SIZE_TEMPLATE.format(category=c),
                      str(round(max(f.the(c)["size"]) * 100)), None)


def _room_size(f: _SceneFacts, rng, bal, dataset):
    room = f.meta["room"]
    yield _record(f.meta, dataset, "room_size_estimation", ROOM_SIZE_TEMPLATE,
                  _format_number(room["width"] * room["depth"], 1), None)


def _rel_distance(f: _SceneFacts, rng, bal, dataset):
    made = 0
    for anchor in rng.permutation(f.unique):
        others = [c for c in f.askable if c != anchor]
        if len(others) < 4 or made >= PER_SCENE["object_rel_distance"]:
            continue
        choices = [others[i] for i in rng.choice(len(others), 4, replace=False)]
        dist = {c: f.distance(anchor, c) for c in choices}
        ranked = sorted(choices, key=dist.get)
        if dist[ranked[1]] - dist[ranked[0]] < REL_DISTANCE_GAP:
            continue
        options, letter = bal.arrange("object_rel_distance", ranked[0], ranked[1:])
        names = [o[3:] for o in options]
        yield _record(f.meta, dataset, "object_rel_distance",
                      REL_DISTANCE_TEMPLATE.format(choices=", ".join(names), category=anchor), letter, options)
        made += 1


_DIRECTIONS = {
    "object_rel_direction_easy": (DIRECTION_EASY_TEMPLATE, direction_easy, ["left", "right"]),
    "object_rel_direction_medium": (DIRECTION_MEDIUM_TEMPLATE, direction_medium, ["left", "right", "back"]),
    "object_rel_direction_hard": (DIRECTION_HARD_TEMPLATE, direction_hard,
                                  ["front-left", "front-right", "back-left", "back-right"]),
}


def _direction(question_type: str):
    template, classify, words = _DIRECTIONS[question_type]

    def build(f: _SceneFacts, rng, bal, dataset):
        triples = list(itertools.permutations(f.unique, 3))
        made = 0
        for i in rng.permutation(len(triples)):
            if made >= PER_SCENE[question_type]:
                break
            stand, face, query = triples[i]
            p = f.floor_xy(stand)
            to_face, to_query = f.floor_xy(face) - p, f.floor_xy(query) - p
            if min(np.linalg.norm(to_face), np.linalg.norm(to_query)) < 0.5:
                continue
            answer = classify(signed_angle(to_face, to_query))
            if answer is None:
                continue
            options, letter = bal.arrange(question_type, answer, [w for w in words if w != answer])
            yield _record(f.meta, dataset, question_type, template.format(stand=stand, face=face, query=query),
                          letter, options)
            made += 1

    return build


def route_answer(points: list[np.ndarray]) -> list[str] | None:
    """Turns at each intermediate waypoint of start -> w1 -> ... -> goal (None if any is ambiguous)."""
    turns = []
    for a, b, c in zip(points[:-2], points[1:-1], points[2:]):
        turn = route_turn(signed_angle(b - a, c - b))
        if turn is None:
            return None
        turns.append(turn)
    return turns


def _route_steps(waypoints: list[str]) -> str:
    steps, n = [], 1
    for k, name in enumerate(waypoints):
        if k:
            steps.append(f"{n}. [please fill in]")
            n += 1
        steps.append(f"{n}. Go forward until the {name}")
        n += 1
    return " ".join(steps) + "."


def _route(f: _SceneFacts, rng, bal, dataset):
    if len(f.unique) < 3:
        return
    made = 0
    for _ in range(60):
        if made >= PER_SCENE["route_planning"]:
            break
        n_turns = int(rng.integers(1, 4))
        if len(f.unique) < n_turns + 2:
            continue
        names = [f.unique[i] for i in rng.choice(len(f.unique), n_turns + 2, replace=False)]
        pts = [f.floor_xy(c) for c in names]
        if min(np.linalg.norm(b - a) for a, b in zip(pts[:-1], pts[1:])) < 0.5:
            continue
        turns = route_answer(pts)
        if turns is None:
            continue
        correct = ", ".join(turns)
        pool = [", ".join(s) for s in itertools.product(["Turn Left", "Turn Right", "Turn Back"], repeat=n_turns)]
        pool = [s for s in pool if s != correct]
        distractors = [pool[i] for i in rng.choice(len(pool), min(3, len(pool)), replace=False)]
        options, letter = bal.arrange("route_planning", correct, distractors)
        question = ROUTE_TEMPLATE.format(start=names[0], face=names[1], goal=names[-1], steps=_route_steps(names[1:]))
        yield _record(f.meta, dataset, "route_planning", question, letter, options)
        made += 1


def _appearance(f: _SceneFacts, rng, bal, dataset):
    if len(f.askable) < 4:
        return
    made = 0
    for _ in range(40):
        if made >= PER_SCENE["obj_appearance_order"]:
            break
        cats = [f.askable[i] for i in rng.choice(len(f.askable), 4, replace=False)]
        order = sorted(cats, key=f.first_frame)
        frames = [f.first_frame(c) for c in order]
        if min(np.diff(frames)) < APPEARANCE_GAP:
            continue
        perms = [p for p in itertools.permutations(order) if list(p) != order]
        distractors = [", ".join(perms[i]) for i in rng.choice(len(perms), 3, replace=False)]
        options, letter = bal.arrange("obj_appearance_order", ", ".join(order), distractors)
        yield _record(f.meta, dataset, "obj_appearance_order", APPEARANCE_TEMPLATE.format(choices=", ".join(cats)),
                      letter, options)
        made += 1


BUILDERS = {
    "object_counting": _counting, "object_abs_distance": _abs_distance, "object_size_estimation": _size,
    "room_size_estimation": _room_size, "object_rel_distance": _rel_distance,
    "object_rel_direction_easy": _direction("object_rel_direction_easy"),
    "object_rel_direction_medium": _direction("object_rel_direction_medium"),
    "object_rel_direction_hard": _direction("object_rel_direction_hard"),
    "route_planning": _route, "obj_appearance_order": _appearance,
}


def questions_for_scene(meta: dict, rng: np.random.Generator, balancer: LetterBalancer,
                        dataset: str = "synthvsi") -> list[dict]:
    """All SynthVSI questions of one scene (``id`` left at -1)."""
    facts = _SceneFacts(meta)
    return [r for qt in QUESTION_TYPES for r in BUILDERS[qt](facts, rng, balancer, dataset)]


def build_questions(metas: list[dict], rng: np.random.Generator, dataset: str = "synthvsi",
                    first_id: int = 0) -> list[dict]:
    """Questions for a list of scene.json dicts, with consecutive integer ids from ``first_id``."""
    balancer = LetterBalancer(rng)
    records = [r for meta in metas for r in questions_for_scene(meta, rng, balancer, dataset)]
    for k, r in enumerate(records):
        r["id"] = first_id + k
    return records


def prompt_text(record: dict) -> str:
    """The VSI-Bench default prompt for a record (without the video)."""
    if record["options"] is None:
        return "\n".join(["These are frames of a video.", record["question"], NA_POST])
    return "\n".join(["These are frames of a video.", record["question"], "Options:", *record["options"], MCA_POST])


def build_sft(records: list[dict]) -> list[dict]:
    """VSI-590K-style SFT conversations: one ``<video>`` placeholder, then the VSI-Bench prompt;
    the answer is the ground truth exactly as the scorer expects it (a letter or a number)."""
    return [{
        "id": f"{r['dataset']}_{r['id']}",
        "data_source": r["dataset"],
        "question_type": r["question_type"],
        "scene_name": r["scene_name"],
        "video": f"{r['dataset']}/{r['scene_name']}.mp4",
        "conversations": [{"from": "human", "value": "<video>\n" + prompt_text(r)},
                          {"from": "gpt", "value": r["ground_truth"]}],
    } for r in records]
