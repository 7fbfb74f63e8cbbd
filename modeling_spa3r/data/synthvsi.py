"""SynthVSI: VSI-Bench-style questions with exact answers from synthetic scene geometry.

Records use the VSI-Bench fields exactly: ``id`` (int), ``dataset`` ("synthvsi"), ``scene_name``,
``question_type`` (the ten VSI-Bench labels), ``question``, ``ground_truth`` (option letter, or a
positive decimal number as text) and ``options`` (``["A. ...", ...]`` or ``None``). The video of a
record is ``<root>/synthvsi/<scene_name>.mp4``.

Question texts are VSI-Bench's templates word for word (``shared/spec/vsibench.md`` §9) and follow
its generation rules. Answers are computed from ``scene.json``:

* distances are exact closest-point distances between the objects' oriented boxes, ``round(d, 1)``
  metres, not asked below 0.2 m; a category with several instances is measured to its closest one;
* sizes are the longest box dimension, ``round(100 * side)`` cm; room size is the floor area,
  ``round(a, 1)`` m^2; counts are asked for categories with at least two instances;
* directions use the centres of the objects' boxes on the floor: "standing by X" = at X's centre,
  "facing Y" = looking at Y's centre, left = counter-clockwise seen from above; a triple is skipped
  when an angle is within 10 degrees of a sector boundary or any two of its objects are closer
  than 0.3 m or farther than 5 m; easy questions only ask about objects in front of the viewer;
* relative distance is skipped when the two closest choices are within 0.15 m of each other or the
  closest choice is within 0.15 m of the primary object (e.g. a TV on its cabinet);
* routes visit objects in a straight line each ("Go forward until the X"); every leg must cross free
  floor (no other furniture between the two objects); turns are the heading changes at each stop;
* appearance order uses, per category, the first frame in which any instance covers at least
  ``visibility_min_pixels`` pixels; consecutive first appearances must be at least one step of a
  32-frame uniform sampling apart, so the order is observable in the frames a model sees.

Only objects visible in the video are asked about, and only categories whose every instance is
visible; "the X" requires X to be unique in the room. Room size is asked only where every wall of the
room is visible in the video (``scene.json``'s ``walls``).

The question mix follows VSI-Bench's per-type proportions over the whole question set
(:data:`VSIBENCH_TYPE_COUNTS`), not a fixed number per scene: every scene contributes candidates,
then quotas are filled from the pooled candidates. Multiple-choice questions are picked so that
answer *texts* are balanced: each option text (alone and together with each object named in the
question) is the right answer about as often as chance says, and list answers (appearance order)
keep every pairwise order balanced; route distractors are drawn from the distribution of correct
routes. Correct letters are then balanced per type.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict

import numpy as np

from .scenes import SceneObject, box_distance, rect_corners

LETTERS = "ABCD"
NA_TYPES = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation")
MCA_TYPES = ("object_rel_distance", "object_rel_direction_easy", "object_rel_direction_medium",
             "object_rel_direction_hard", "route_planning", "obj_appearance_order")
QUESTION_TYPES = NA_TYPES + MCA_TYPES

#: Questions per type in VSI-Bench's full test set (5,130 questions): the mix SynthVSI follows.
VSIBENCH_TYPE_COUNTS = {
    "object_counting": 565, "object_abs_distance": 834, "object_size_estimation": 953, "room_size_estimation": 288,
    "object_rel_distance": 710, "object_rel_direction_easy": 217, "object_rel_direction_medium": 378,
    "object_rel_direction_hard": 373, "route_planning": 194, "obj_appearance_order": 618,
}

COUNT_TEMPLATE = "How many {category}(s) are in this room?"
ABS_DISTANCE_TEMPLATE = ("Measuring from the closest point of each object, what is the direct distance between "
                         "the {a} and the {b} (in meters)?")
SIZE_TEMPLATE = ("What is the length of the longest dimension (length, width, or height) of the {category}, "
                 "measured in centimeters?")
ROOM_SIZE_TEMPLATE = ("What is the size of this room (in square meters)? \nIf multiple rooms are shown, estimate the "
                      "size of the combined space.")
REL_DISTANCE_TEMPLATE = ("Measuring from the closest point of each object, which of these objects ({choices}) is "
                         "the closest to the {category}?\nIf there are multiple instances of an object category, "
                         "measure to the closest.")
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

#: The question template of each type (``{slot}`` placeholders).
TEMPLATES = {
    "object_counting": COUNT_TEMPLATE, "object_abs_distance": ABS_DISTANCE_TEMPLATE,
    "object_size_estimation": SIZE_TEMPLATE, "room_size_estimation": ROOM_SIZE_TEMPLATE,
    "object_rel_distance": REL_DISTANCE_TEMPLATE, "object_rel_direction_easy": DIRECTION_EASY_TEMPLATE,
    "object_rel_direction_medium": DIRECTION_MEDIUM_TEMPLATE, "object_rel_direction_hard": DIRECTION_HARD_TEMPLATE,
    "route_planning": ROUTE_TEMPLATE, "obj_appearance_order": APPEARANCE_TEMPLATE,
}

#: Decimals of the numerical answers (VSI-Bench rounding).
ANSWER_DECIMALS = {"object_counting": 0, "object_abs_distance": 1, "object_size_estimation": 0,
                   "room_size_estimation": 1}

MCA_POST = "Answer with the option's letter from the given choices directly."
NA_POST = "Please answer the question using a single word or phrase."

#: Candidate questions of each type drawn per scene at most (the quotas then pick from the pool).
CANDIDATES_PER_SCENE = {"object_counting": 4, "object_abs_distance": 8, "object_size_estimation": 8,
                        "room_size_estimation": 1, "object_rel_distance": 10, "object_rel_direction_easy": 6,
                        "object_rel_direction_medium": 8, "object_rel_direction_hard": 8, "route_planning": 6,
                        "obj_appearance_order": 20}
#: Fewer candidates than this do not limit the dataset size (small datasets keep every type).
MIN_POOL_FOR_QUOTA = 5

MIN_DISTANCE = 0.2  # m; closer pairs are not asked (answers must be > 0 and readable)
REL_DISTANCE_GAP = 0.15  # m; the closest choice must beat the second by this much and be this far from the primary
ANGLE_MARGIN = 10.0  # degrees kept away from every direction sector boundary
DIRECTION_PAIR_RANGE = (0.3, 5.0)  # m; every pair of a direction triple is this far apart (closest points)
SAMPLED_FRAMES = 32  # frames a model sees (uniform sampling); appearance order must be observable in them
ROUTE_TURNS = {"Turn Left": (60.0, 120.0), "Turn Right": (-120.0, -60.0)}
ROUTE_BACK = 150.0  # |angle| at least this -> "Turn Back"
ROUTE_CLEARANCE = 0.05  # m; a route leg keeps this distance from other furniture
ROUTE_ACTIONS = ("Turn Left", "Turn Right", "Turn Back")
_BALANCE_SAMPLE = 32  # candidates scored per greedy balancing step


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
        if "walls" not in meta:
            raise ValueError(f"scene {meta.get('scene_name')!r}: scene.json has no 'walls' (the frames each wall is "
                             "visible in; scenes rendered before the whole-room scans of 2026-12-07 lack it): render "
                             "the rooms again with `spa3r synth`")  # fmt: skip
        self.whole_room_seen = all(wall["visible_in"] for wall in meta["walls"])  # every wall appears in the video
        self.boxes = {o["instance_id"]: _as_object(o) for o in meta["objects"]}
        self._distances: dict[tuple[str, str], float] = {}

    def the(self, category: str) -> dict:
        return self.by_category[category][0]

    def distance(self, a: str, b: str) -> float:
        """Closest-point distance between categories (closest pair of instances)."""
        key = (a, b) if a <= b else (b, a)
        if key not in self._distances:
            self._distances[key] = min(box_distance(self.boxes[x["instance_id"]], self.boxes[y["instance_id"]])
                                       for x in self.by_category[a] for y in self.by_category[b])
        return self._distances[key]

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
    """left / right for an object in front of the viewer (|angle| < 90); None when ambiguous or behind."""
    if _near_any(angle, (0.0, 90.0)) or abs(angle) >= 90.0:
        return None
    return "left" if angle > 0 else "right"


def direction_medium(angle: float) -> str | None:
    """Sectors [0, 135) left, [135, 225] back, (225, 360) right (counter-clockwise from the facing object)."""
    if _near_any(angle, (0.0, 135.0)):
        return None
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


def appearance_gap(num_frames: int) -> float:
    """Frames between two consecutive samples when a video of ``num_frames`` is sampled to 32 frames."""
    return max(1.0, (num_frames - 1) / (SAMPLED_FRAMES - 1))


def format_number(value: float, question_type: str) -> str:
    """A numerical answer as VSI-Bench writes it (``round(v)`` or ``round(v, 1)`` per type)."""
    decimals = ANSWER_DECIMALS[question_type]
    return str(round(value)) if decimals == 0 else f"{round(value, decimals):.{decimals}f}"


class _Candidate:
    """A question before selection: its text, and for multiple choice the answer text and distractors."""

    def __init__(self, scene: int, question_type: str, question: str, answer: str,
                 distractors: list[str] | None = None, keys: tuple[str, ...] = ()):
        self.scene, self.question_type, self.question = scene, question_type, question
        self.answer, self.distractors, self.keys = answer, distractors, keys
        self._terms = None

    def balance_terms(self) -> list[tuple[tuple, float, float]]:
        """(key, hit, target rate) terms whose hit rates the selection keeps near their targets."""
        if self._terms is None:
            self._terms = self._balance_terms()
        return self._terms

    def _balance_terms(self) -> list[tuple[tuple, float, float]]:
        texts = [self.answer] + self.distractors
        target = 1.0 / len(texts)
        terms = []
        for text in texts:
            hit = float(text == self.answer)
            terms.append((("text", text), hit, target))
            terms.extend((("text", text, key), hit, target) for key in self.keys)
        if self.question_type == "obj_appearance_order":
            items = self.answer.split(", ")
            for a, b in itertools.combinations(items, 2):
                lo, hi = sorted((a, b))
                terms.append((("before", lo, hi), float(lo == a), 0.5))
            for k, item in enumerate(items):  # e.g. categories with many instances tend to be seen first
                terms.append((("first", item), float(k == 0), 1 / len(items)))
                terms.append((("last", item), float(k == len(items) - 1), 1 / len(items)))
        return terms


def _counting(f: _SceneFacts, scene: int, rng):
    cats = [c for c in f.askable if len(f.by_category[c]) >= 2]
    for c in rng.permutation(cats)[:CANDIDATES_PER_SCENE["object_counting"]]:
        yield _Candidate(scene, "object_counting", COUNT_TEMPLATE.format(category=c),
                         format_number(len(f.by_category[c]), "object_counting"), keys=(str(c),))


def _abs_distance(f: _SceneFacts, scene: int, rng):
    pairs = [p for p in itertools.combinations(f.unique, 2) if f.distance(*p) >= MIN_DISTANCE]
    for i in rng.permutation(len(pairs))[:CANDIDATES_PER_SCENE["object_abs_distance"]]:
        a, b = pairs[i] if rng.random() < 0.5 else pairs[i][::-1]
        yield _Candidate(scene, "object_abs_distance", ABS_DISTANCE_TEMPLATE.format(a=a, b=b),
                         format_number(f.distance(a, b), "object_abs_distance"), keys=tuple(sorted((a, b))))


def _size(f: _SceneFacts, scene: int, rng):
    for c in rng.permutation(f.unique)[:CANDIDATES_PER_SCENE["object_size_estimation"]]:
        yield _Candidate(scene, "object_size_estimation", SIZE_TEMPLATE.format(category=c),
                         format_number(100 * max(f.the(c)["size"]), "object_size_estimation"), keys=(str(c),))


def _room_size(f: _SceneFacts, scene: int, rng):
    if not f.whole_room_seen:
        return
    room = f.meta["room"]
    yield _Candidate(scene, "room_size_estimation", ROOM_SIZE_TEMPLATE,
                     format_number(room["width"] * room["depth"], "room_size_estimation"))


def _rel_distance(f: _SceneFacts, scene: int, rng):
    made = 0
    for primary in rng.permutation(f.unique):
        others = [c for c in f.askable if c != primary]
        if len(others) < 4 or made >= CANDIDATES_PER_SCENE["object_rel_distance"]:
            continue
        for _ in range(3):  # a few choice sets per primary object
            choices = [others[i] for i in rng.choice(len(others), 4, replace=False)]
            dist = {c: f.distance(primary, c) for c in choices}
            ranked = sorted(choices, key=dist.get)
            if dist[ranked[1]] - dist[ranked[0]] < REL_DISTANCE_GAP or dist[ranked[0]] < REL_DISTANCE_GAP:
                continue
            question = REL_DISTANCE_TEMPLATE.replace("{category}", str(primary))  # choices: in option order
            yield _Candidate(scene, "object_rel_distance", question, ranked[0], ranked[1:], keys=(str(primary),))
            made += 1
            break


_DIRECTIONS = {
    "object_rel_direction_easy": (DIRECTION_EASY_TEMPLATE, direction_easy, ["left", "right"]),
    "object_rel_direction_medium": (DIRECTION_MEDIUM_TEMPLATE, direction_medium, ["left", "right", "back"]),
    "object_rel_direction_hard": (DIRECTION_HARD_TEMPLATE, direction_hard,
                                  ["front-left", "front-right", "back-left", "back-right"]),
}


def _direction(question_type: str):
    template, classify, words = _DIRECTIONS[question_type]
    lo, hi = DIRECTION_PAIR_RANGE

    per_answer = math.ceil(CANDIDATES_PER_SCENE[question_type] / len(words))

    def build(f: _SceneFacts, scene: int, rng):
        triples = list(itertools.permutations(f.unique, 3))
        made = Counter()  # candidates per answer, so that rarer answers (e.g. "back") are kept too
        for i in rng.permutation(len(triples)):
            if all(made[w] >= per_answer for w in words):
                break
            stand, face, query = triples[i]
            if not all(lo <= f.distance(a, b) <= hi for a, b in ((stand, face), (stand, query), (face, query))):
                continue
            p = f.floor_xy(stand)
            answer = classify(signed_angle(f.floor_xy(face) - p, f.floor_xy(query) - p))
            if answer is None or made[answer] >= per_answer:
                continue
            yield _Candidate(scene, question_type, template.format(stand=stand, face=face, query=query), answer,
                             [w for w in words if w != answer], keys=(f"stand={stand}", f"face={face}",
                                                                      f"query={query}"))
            made[answer] += 1

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


def _in_rect(points: np.ndarray, corners: np.ndarray, margin: float) -> np.ndarray:
    """Which points (N, 2) lie inside a rectangle given by its corners (4, 2) grown by ``margin``."""
    origin, ex, ey = corners[0], corners[1] - corners[0], corners[3] - corners[0]
    lx, ly = np.linalg.norm(ex), np.linalg.norm(ey)
    u = (points - origin) @ (ex / lx)
    v = (points - origin) @ (ey / ly)
    return (u >= -margin) & (u <= lx + margin) & (v >= -margin) & (v <= ly + margin)


def _footprint(obj: dict) -> np.ndarray:
    return rect_corners(np.array(obj["center"][:2]), np.array(obj["size"][:2]), obj["yaw"])


def leg_is_walkable(meta: dict, a: dict, b: dict, clearance: float = ROUTE_CLEARANCE) -> bool:
    """Whether walking straight from object ``a``'s centre to ``b``'s crosses only free floor: once
    outside the two objects (and what supports them), no other floor object's footprint is touched."""
    ends = {a["instance_id"], b["instance_id"], a["support"], b["support"]}
    pa, pb = np.array(a["center"][:2]), np.array(b["center"][:2])
    n = max(2, int(np.linalg.norm(pb - pa) / 0.02) + 1)
    points = pa + np.linspace(0.0, 1.0, n)[:, None] * (pb - pa)  # (n, 2)
    for obj in meta["objects"]:
        if obj["instance_id"] in ends or obj["support"] != 0:
            continue
        if _in_rect(points, _footprint(obj), clearance).any():
            return False
    return True


def _route(f: _SceneFacts, scene: int, rng):
    floor = [c for c in f.unique if c != "window"]  # places one can walk to
    if len(floor) < 3:
        return
    made = 0
    for _ in range(80):
        if made >= CANDIDATES_PER_SCENE["route_planning"]:
            break
        n_turns = int(rng.integers(1, 4))
        if len(floor) < n_turns + 2:
            continue
        names = [floor[i] for i in rng.choice(len(floor), n_turns + 2, replace=False)]
        pts = [f.floor_xy(c) for c in names]
        if min(np.linalg.norm(b - a) for a, b in zip(pts[:-1], pts[1:])) < 0.5:
            continue
        turns = route_answer(pts)
        if turns is None:
            continue
        if not all(leg_is_walkable(f.meta, f.the(x), f.the(y)) for x, y in zip(names[:-1], names[1:])):
            continue
        question = ROUTE_TEMPLATE.format(start=names[0], face=names[1], goal=names[-1], steps=_route_steps(names[1:]))
        yield _Candidate(scene, "route_planning", question, ", ".join(turns),
                         keys=(f"start={names[0]}", f"face={names[1]}", f"goal={names[-1]}"))
        made += 1


def _appearance(f: _SceneFacts, scene: int, rng):
    visible = f.askable
    if len(visible) < 4:
        return
    gap = appearance_gap(f.meta["camera"]["num_frames"])
    made = 0
    for _ in range(100):
        if made >= CANDIDATES_PER_SCENE["obj_appearance_order"]:
            break
        cats = [visible[i] for i in rng.choice(len(visible), 4, replace=False)]
        order = sorted(cats, key=f.first_frame)
        if min(np.diff([f.first_frame(c) for c in order])) < gap:
            continue
        perms = [", ".join(p) for p in itertools.permutations(order) if list(p) != order]
        distractors = [perms[i] for i in rng.choice(len(perms), 3, replace=False)]
        yield _Candidate(scene, "obj_appearance_order", APPEARANCE_TEMPLATE.format(choices=", ".join(cats)),
                         ", ".join(order), distractors)
        made += 1


BUILDERS = {
    "object_counting": _counting, "object_abs_distance": _abs_distance, "object_size_estimation": _size,
    "room_size_estimation": _room_size, "object_rel_distance": _rel_distance,
    "object_rel_direction_easy": _direction("object_rel_direction_easy"),
    "object_rel_direction_medium": _direction("object_rel_direction_medium"),
    "object_rel_direction_hard": _direction("object_rel_direction_hard"),
    "route_planning": _route, "obj_appearance_order": _appearance,
}


def _route_distractors(pool: list[_Candidate], rng: np.random.Generator) -> None:
    """Distractors of each route drawn from the pool's correct routes of the same length (by frequency),
    so that no turn sequence is more often right than wrong; sequences never seen fill in uniformly."""
    freq = Counter(c.answer for c in pool)
    for c in pool:
        n_turns = c.answer.count(",") + 1
        texts = sorted(", ".join(s) for s in itertools.product(ROUTE_ACTIONS, repeat=n_turns))
        texts.remove(c.answer)
        weights = np.array([freq.get(t, 0) + 0.5 for t in texts], dtype=float)
        picks = rng.choice(len(texts), min(3, len(texts)), replace=False, p=weights / weights.sum())
        c.distractors = [texts[i] for i in picks]


def type_quotas(pool_sizes: dict[str, int]) -> dict[str, int]:
    """Questions per type: VSI-Bench's proportions scaled to the largest set every pool can fill.

    Pools with fewer than :data:`MIN_POOL_FOR_QUOTA` candidates do not limit the size (they give what
    they have); empty pools give nothing. Largest-remainder rounding keeps the proportions exact.
    """
    total = sum(VSIBENCH_TYPE_COUNTS.values())
    share = {qt: VSIBENCH_TYPE_COUNTS[qt] / total for qt in QUESTION_TYPES}
    limiting = [pool_sizes.get(qt, 0) / share[qt] for qt in QUESTION_TYPES
                if pool_sizes.get(qt, 0) >= MIN_POOL_FOR_QUOTA]
    if not limiting:
        return {qt: pool_sizes.get(qt, 0) for qt in QUESTION_TYPES}
    size = min(limiting)
    exact = {qt: size * share[qt] for qt in QUESTION_TYPES}
    quotas = {qt: math.floor(v) for qt, v in exact.items()}
    for qt in sorted(QUESTION_TYPES, key=lambda t: quotas[t] - exact[t])[:round(size) - sum(quotas.values())]:
        quotas[qt] += 1
    return {qt: min(max(quotas[qt], 1 if pool_sizes.get(qt, 0) else 0), pool_sizes.get(qt, 0))
            for qt in QUESTION_TYPES}


def _select_balanced(pool: list[_Candidate], quota: int, rng: np.random.Generator) -> list[_Candidate]:
    """Greedy selection keeping every balance term's hit rate near its target (see ``balance_terms``)."""
    remaining = list(pool)
    hits, shown = defaultdict(float), defaultdict(float)
    chosen = []
    while len(chosen) < quota and remaining:
        sample = rng.choice(len(remaining), min(_BALANCE_SAMPLE, len(remaining)), replace=False)
        best, best_cost = None, math.inf
        for i in sample:
            cost = 0.0
            for key, hit, target in remaining[i].balance_terms():
                before = hits[key] - target * shown[key]
                cost += (before + hit - target) ** 2 - before ** 2
            if cost < best_cost - 1e-12:
                best, best_cost = int(i), cost
        pick = remaining[best]
        for key, hit, _ in pick.balance_terms():
            hits[key] += hit
            shown[key] += 1
        chosen.append(pick)
        remaining[best] = remaining[-1]
        remaining.pop()
    return chosen


def _value_bin(c: _Candidate) -> int:
    """Histogram bin of a numerical answer: the count itself, else 15 % wide log bins."""
    value = float(c.answer)
    return int(value) if c.question_type == "object_counting" else math.floor(math.log(value) / 0.15)


def _select_spread(pool: list[_Candidate], quota: int, rng: np.random.Generator) -> list[_Candidate]:
    """``quota`` numerical questions with flat answer histograms: greedily the candidate whose answer
    bin is rarest for its question slots (e.g. its category), then overall, then for its scene."""
    remaining = list(pool)
    per_key, per_bin, per_scene = Counter(), Counter(), Counter()
    chosen = []
    while len(chosen) < quota and remaining:
        sample = rng.choice(len(remaining), min(_BALANCE_SAMPLE, len(remaining)), replace=False)
        best = min(sample, key=lambda i: (per_key[(remaining[i].keys, _value_bin(remaining[i]))],
                                          per_bin[_value_bin(remaining[i])], per_scene[remaining[i].scene], i))
        pick = remaining[best]
        per_key[(pick.keys, _value_bin(pick))] += 1
        per_bin[_value_bin(pick)] += 1
        per_scene[pick.scene] += 1
        chosen.append(pick)
        remaining[best] = remaining[-1]
        remaining.pop()
    return chosen


def _record(meta: dict, dataset: str, question_type: str, question: str, answer: str, options) -> dict:
    return {"id": -1, "dataset": dataset, "scene_name": meta["scene_name"], "question_type": question_type,
            "question": question, "ground_truth": answer, "options": options}


def _finish(c: _Candidate, meta: dict, balancer: LetterBalancer, dataset: str) -> dict:
    if c.distractors is None:
        return _record(meta, dataset, c.question_type, c.question, c.answer, None)
    options, letter = balancer.arrange(c.question_type, c.answer, c.distractors)
    question = c.question.replace("{choices}", ", ".join(o[3:] for o in options))
    return _record(meta, dataset, c.question_type, question, letter, options)


def questions_for_scene(meta: dict, rng: np.random.Generator, balancer: LetterBalancer,
                        dataset: str = "synthvsi") -> list[dict]:
    """SynthVSI questions of one scene on its own (quotas over this scene only; ``id`` left at -1)."""
    return _build(metas=[meta], rng=rng, balancer=balancer, dataset=dataset)


def _candidate_pools(metas: list[dict], rng: np.random.Generator) -> dict[str, list[_Candidate]]:
    """Every candidate question of every scene, per type (before quotas and balanced selection)."""
    pools: dict[str, list[_Candidate]] = {qt: [] for qt in QUESTION_TYPES}
    for scene, meta in enumerate(metas):
        facts = _SceneFacts(meta)
        for qt in QUESTION_TYPES:
            pools[qt].extend(BUILDERS[qt](facts, scene, rng))
    _route_distractors(pools["route_planning"], rng)
    return pools


def _build(metas: list[dict], rng: np.random.Generator, balancer: LetterBalancer, dataset: str) -> list[dict]:
    pools = _candidate_pools(metas, rng)
    quotas = type_quotas({qt: len(p) for qt, p in pools.items()})
    chosen = []
    for qt in QUESTION_TYPES:
        select = _select_spread if qt in NA_TYPES else _select_balanced
        chosen.extend(select(pools[qt], quotas[qt], rng))
    order = {id(c): k for k, c in enumerate(c for qt in QUESTION_TYPES for c in pools[qt])}
    chosen.sort(key=lambda c: (c.scene, QUESTION_TYPES.index(c.question_type), order[id(c)]))
    return [_finish(c, metas[c.scene], balancer, dataset) for c in chosen]


def _numbered(records: list[dict], first_id: int) -> list[dict]:
    """The records with consecutive integer ids from ``first_id``."""
    for k, r in enumerate(records):
        r["id"] = first_id + k
    return records


def build_questions(metas: list[dict], rng: np.random.Generator, dataset: str = "synthvsi",
                    first_id: int = 0) -> list[dict]:
    """Questions for a list of scene.json dicts, with consecutive integer ids from ``first_id``.

    The type mix follows VSI-Bench's proportions over the whole list (see :func:`type_quotas`).
    """
    return _numbered(_build(metas, rng, LetterBalancer(rng), dataset), first_id)


def question_pool(metas: list[dict], rng: np.random.Generator, dataset: str = "synthvsi",
                  first_id: int = 0) -> list[dict]:
    """Every candidate question of the scenes, without VSI-Bench's type mix or the balanced selection (ids from
    ``first_id``). Blind priors fitted on the pool of the train rooms show what text alone can learn from these
    rooms with more questions than the balanced train split holds (``data.priors``); the pool is not debiased."""
    pools = _candidate_pools(metas, rng)
    balancer = LetterBalancer(rng)
    return _numbered([_finish(c, metas[c.scene], balancer, dataset) for qt in QUESTION_TYPES for c in pools[qt]],
                     first_id)


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
