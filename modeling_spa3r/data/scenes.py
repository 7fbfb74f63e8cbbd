"""Procedural indoor rooms with exact geometry.

World frame: metres, right-handed, z up. A room is the axis-aligned box
``[0, width] x [0, depth] x [0, height]``. Every object is a set of primitives (yaw-rotated boxes and
vertical cylinders) and carries an oriented 3-D bounding box (centre, size = (length, width, height)
along its local x/y/z axes, yaw about +z in radians). Doors and windows are thin boxes flush with a
wall ("wall patches") and are objects like any other.

Everything is a pure function of the seed: ``generate_scene(seed)`` always returns the same scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SHAPE_BOX = 0
SHAPE_CYLINDER = 1

TEX_PLAIN = 0
TEX_WOOD = 1
TEX_FABRIC = 2
TEX_CHECKER = 3
TEX_SCREEN = 4

#: Semantic classes; index 0 is "unlabeled". Room surfaces come first, then the object vocabulary.
STRUCTURE_CLASSES = ("wall", "floor", "ceiling")
OBJECT_CLASSES = (
    "chair", "stool", "table", "desk", "sofa", "bed", "cabinet", "shelf", "refrigerator", "toilet",
    "sink", "trash can", "tv", "monitor", "lamp", "plant", "nightstand", "washer", "stove",
    "microwave", "laptop", "backpack", "pillow", "door", "window",
)
SEMANTIC_CLASSES = ("unlabeled",) + STRUCTURE_CLASSES + OBJECT_CLASSES
CLASS_INDEX = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}

#: Small categories placed on a support: category -> supports it may stand on.
ON_TOP = {
    "tv": ("cabinet", "table", "desk"),
    "monitor": ("desk", "table"),
    "lamp": ("nightstand", "desk", "table", "cabinet"),
    "microwave": ("cabinet", "table"),
    "laptop": ("desk", "table", "bed"),
    "pillow": ("bed", "sofa"),
    "plant": ("table", "cabinet", "shelf", "nightstand"),
}
#: Tallest instance of a category that may stand on a support (floor lamps stay on the floor).
MAX_ON_TOP_HEIGHT = {"lamp": 0.8, "plant": 0.6}
#: Floor categories placed with their back (local -y side) against a wall.
AGAINST_WALL = ("desk", "sofa", "bed", "cabinet", "shelf", "refrigerator", "toilet", "sink",
                "nightstand", "washer", "stove")

#: Furniture every room of a type gets first (a bedroom has a bed, a bathroom a toilet and a sink).
ROOM_ANCHORS = {
    "living_room": ("sofa", "table", "tv"),
    "bedroom": ("bed", "nightstand", "pillow", "lamp"),
    "office": ("desk", "chair", "monitor"),
    "kitchen": ("refrigerator", "stove", "sink", "table"),
    "bathroom": ("toilet", "sink", "trash can"),
}
BATHROOM_MAX_AREA = 20.0  # m^2
#: Categories that often come in groups: extra copies placed right after one (at most this many), so
#: counts vary per category instead of being mostly 2.
GROUPS = {"pillow": 3, "plant": 3, "stool": 3, "trash can": 2, "backpack": 2, "lamp": 2, "nightstand": 1,
          "monitor": 2, "laptop": 2, "cabinet": 2, "shelf": 2, "microwave": 1, "tv": 1, "chair": 3}
GROUP_CHANCE = 0.4
#: Tables and desks get this many chairs (range) pulled up to them.
CHAIRS_AROUND = {"table": (2, 4), "desk": (1, 1)}

#: Room types: category -> relative frequency of each furniture pick.
ROOM_TYPES = {
    "living_room": {"sofa": 3, "table": 3, "chair": 4, "cabinet": 2, "tv": 3, "lamp": 2, "plant": 3,
                    "shelf": 2, "stool": 1, "trash can": 1, "pillow": 2, "backpack": 1},
    "bedroom": {"bed": 4, "nightstand": 3, "lamp": 3, "cabinet": 2, "desk": 2, "chair": 2,
                "pillow": 3, "plant": 1, "trash can": 1, "backpack": 1, "tv": 1, "laptop": 1},
    "office": {"desk": 4, "chair": 5, "monitor": 4, "shelf": 2, "cabinet": 2, "trash can": 2,
               "plant": 2, "lamp": 1, "laptop": 2, "backpack": 1, "table": 1},
    "kitchen": {"refrigerator": 3, "stove": 3, "sink": 3, "table": 3, "chair": 4, "stool": 3,
                "cabinet": 3, "microwave": 3, "trash can": 2, "washer": 1, "plant": 1},
    "bathroom": {"toilet": 4, "sink": 4, "trash can": 3, "cabinet": 2, "washer": 2, "plant": 1,
                 "shelf": 1},
}


@dataclass
class Primitive:
    """One renderable primitive in world coordinates.

    ``size`` is the full extent along the primitive's local axes; for a cylinder ``size[0]`` is the
    diameter and ``size[2]`` the height (the axis is world +z).
    """

    shape: int
    center: np.ndarray  # (3,)
    size: np.ndarray  # (3,)
    yaw: float
    color: np.ndarray  # (3,) albedo in [0, 1]
    texture: int


@dataclass
class SceneObject:
    """An object instance: category, id, oriented box and the primitives that draw it."""

    instance_id: int
    category: str
    center: np.ndarray  # (3,) centre of the oriented box
    size: np.ndarray  # (3,) length, width, height in metres
    yaw: float
    support: int  # instance id of the supporting object, 0 = floor, -1 = wall
    parts: list[Primitive] = field(default_factory=list)

    def footprint(self) -> np.ndarray:
        """Corners of the box footprint on the floor plane, (4, 2), counter-clockwise."""
        return rect_corners(self.center[:2], self.size[:2], self.yaw)

    def to_json(self) -> dict:
        return {
            "instance_id": self.instance_id,
            "category": self.category,
            "center": [round(float(v), 5) for v in self.center],
            "size": [round(float(v), 5) for v in self.size],
            "yaw": round(float(self.yaw), 6),
            "support": self.support,
            "corners": [[round(float(v), 5) for v in c] for c in box_corners(self.center, self.size, self.yaw)],
        }


@dataclass
class Room:
    """Room extent and surface appearance."""

    width: float  # along x
    depth: float  # along y
    height: float  # along z
    floor_color: np.ndarray
    wall_colors: np.ndarray  # (4, 3) for walls x=0, x=W, y=0, y=D
    ceiling_color: np.ndarray
    floor_pattern: str  # "planks" or "tiles"
    floor_scale: float  # plank width or tile size in metres
    texture_seed: int

    def to_json(self) -> dict:
        return {
            "width": round(self.width, 5), "depth": round(self.depth, 5), "height": round(self.height, 5),
            "floor_area": round(self.width * self.depth, 5),
            "floor_color": _rounded(self.floor_color), "wall_colors": [_rounded(c) for c in self.wall_colors],
            "ceiling_color": _rounded(self.ceiling_color), "floor_pattern": self.floor_pattern,
            "floor_scale": round(self.floor_scale, 5), "texture_seed": self.texture_seed,
        }


@dataclass
class Scene:
    """A generated room with its objects."""

    seed: int
    room_type: str
    room: Room
    objects: list[SceneObject]

    def primitives(self) -> tuple[list[Primitive], list[int]]:
        """All primitives and, for each, the instance id of the object it belongs to."""
        prims, ids = [], []
        for obj in self.objects:
            prims.extend(obj.parts)
            ids.extend([obj.instance_id] * len(obj.parts))
        return prims, ids

    def to_json(self) -> dict:
        return {"seed": self.seed, "room_type": self.room_type, "room": self.room.to_json(),
                "objects": [o.to_json() for o in self.objects]}


def _rounded(v) -> list[float]:
    return [round(float(x), 5) for x in v]


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------

def rotation_z(yaw: float) -> np.ndarray:
    """3x3 rotation about +z by ``yaw`` radians."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rect_corners(center: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    """Corners (4, 2) of a rotated rectangle, counter-clockwise."""
    hx, hy = size[0] / 2, size[1] / 2
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.asarray(center)[:2]


def box_corners(center: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    """The 8 corners (8, 3) of an oriented box: bottom four then top four."""
    foot = rect_corners(center[:2], size[:2], yaw)
    z0, z1 = center[2] - size[2] / 2, center[2] + size[2] / 2
    return np.concatenate([np.c_[foot, np.full(4, z0)], np.c_[foot, np.full(4, z1)]])


def rects_overlap(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    """Separating-axis test for two convex quads (4, 2); ``margin`` grows both shapes."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]]) / (np.linalg.norm(edge) + 1e-12)
            pa, pb = a @ axis, b @ axis
            if pa.max() + margin <= pb.min() or pb.max() + margin <= pa.min():
                return False
    return True


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / (np.dot(ab, ab) + 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def rect_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Exact distance between two convex quads (4, 2); 0 when they overlap."""
    if rects_overlap(a, b):
        return 0.0
    best = math.inf
    for p, q in ((a, b), (b, a)):
        for v in p:
            for i in range(4):
                best = min(best, _point_segment_distance(v, q[i], q[(i + 1) % 4]))
    return best


def box_distance(a: SceneObject, b: SceneObject) -> float:
    """Exact closest-point distance between two yaw-only oriented boxes (prisms along z).

    For product sets (rectangle x interval) the Euclidean distance separates into the planar
    rectangle distance and the 1-D interval gap.
    """
    dxy = rect_distance(a.footprint(), b.footprint())
    a0, a1 = a.center[2] - a.size[2] / 2, a.center[2] + a.size[2] / 2
    b0, b1 = b.center[2] - b.size[2] / 2, b.center[2] + b.size[2] / 2
    dz = max(0.0, b0 - a1, a0 - b1)
    return math.hypot(dxy, dz)


# ----------------------------------------------------------------------------------------------
# Object builders: each returns (size (l, w, h), parts in the object's local frame)
# ----------------------------------------------------------------------------------------------

@dataclass
class _LocalPart:
    shape: int
    center: tuple[float, float, float]  # local frame, origin at the bottom centre of the box
    size: tuple[float, float, float]
    color: np.ndarray
    texture: int


_PALETTE = {
    "wood": [(0.55, 0.38, 0.22), (0.68, 0.5, 0.32), (0.42, 0.28, 0.17), (0.78, 0.64, 0.45)],
    "fabric": [(0.35, 0.42, 0.55), (0.6, 0.25, 0.22), (0.45, 0.5, 0.38), (0.55, 0.53, 0.5), (0.25, 0.25, 0.3)],
    "white": [(0.92, 0.92, 0.9), (0.85, 0.86, 0.88), (0.95, 0.94, 0.9)],
    "metal": [(0.7, 0.72, 0.75), (0.5, 0.52, 0.55), (0.85, 0.86, 0.88)],
    "dark": [(0.08, 0.08, 0.1), (0.12, 0.12, 0.14)],
    "plastic": [(0.2, 0.45, 0.7), (0.75, 0.2, 0.2), (0.2, 0.6, 0.35), (0.9, 0.75, 0.2), (0.3, 0.3, 0.32)],
    "green": [(0.2, 0.5, 0.2), (0.28, 0.58, 0.25), (0.15, 0.42, 0.2)],
    "terracotta": [(0.72, 0.4, 0.25), (0.6, 0.35, 0.28)],
}


def _color(rng: np.random.Generator, palette: str) -> np.ndarray:
    base = np.array(_PALETTE[palette][rng.integers(len(_PALETTE[palette]))])
    return np.clip(base * rng.uniform(0.9, 1.1), 0.0, 1.0)


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _box(cx, cy, z0, sx, sy, sz, color, tex=TEX_PLAIN) -> _LocalPart:
    return _LocalPart(SHAPE_BOX, (cx, cy, z0 + sz / 2), (sx, sy, sz), color, tex)


def _cyl(cx, cy, z0, d, h, color, tex=TEX_PLAIN) -> _LocalPart:
    return _LocalPart(SHAPE_CYLINDER, (cx, cy, z0 + h / 2), (d, d, h), color, tex)


def _legs(l, w, h, t, color) -> list[_LocalPart]:
    ox, oy = l / 2 - t / 2, w / 2 - t / 2
    return [_box(sx * ox, sy * oy, 0.0, t, t, h, color) for sx in (-1, 1) for sy in (-1, 1)]


def _build_chair(rng):
    l, w, h = _u(rng, 0.44, 0.54), _u(rng, 0.44, 0.54), _u(rng, 0.8, 1.0)
    seat_h, wood, fab = _u(rng, 0.42, 0.48), _color(rng, "wood"), _color(rng, "fabric")
    parts = _legs(l, w, seat_h - 0.05, 0.04, wood)
    parts.append(_box(0, 0, seat_h - 0.05, l, w, 0.06, fab, TEX_FABRIC))
    parts.append(_box(0, -w / 2 + 0.03, seat_h, l, 0.05, h - seat_h, wood, TEX_WOOD))
    return (l, w, h), parts


def _build_stool(rng):
    d, h = _u(rng, 0.3, 0.4), _u(rng, 0.45, 0.75)
    return (d, d, h), [_cyl(0, 0, 0, d * 0.35, h - 0.05, _color(rng, "metal")),
                       _cyl(0, 0, h - 0.05, d, 0.05, _color(rng, "wood"), TEX_WOOD)]


def _build_table(rng):
    l, w, h = _u(rng, 1.0, 1.8), _u(rng, 0.6, 1.0), _u(rng, 0.72, 0.78)
    c = _color(rng, "wood")
    return (l, w, h), _legs(l, w, h - 0.04, 0.06, c * 0.8) + [_box(0, 0, h - 0.04, l, w, 0.04, c, TEX_WOOD)]


def _build_desk(rng):
    l, w, h = _u(rng, 1.1, 1.6), _u(rng, 0.55, 0.8), _u(rng, 0.72, 0.76)
    c = _color(rng, "wood" if rng.random() < 0.6 else "white")
    return (l, w, h), [_box(-l / 2 + 0.02, 0, 0, 0.04, w, h - 0.03, c), _box(l / 2 - 0.02, 0, 0, 0.04, w, h - 0.03, c),
                       _box(0, 0, h - 0.03, l, w, 0.03, c, TEX_WOOD)]


def _build_sofa(rng):
    l, w, h = _u(rng, 1.6, 2.4), _u(rng, 0.8, 1.0), _u(rng, 0.75, 0.95)
    c, arm = _color(rng, "fabric"), 0.18
    return (l, w, h), [_box(0, 0.05, 0, l - 2 * arm, w - 0.1, 0.45, c, TEX_FABRIC),
                       _box(0, -w / 2 + 0.1, 0, l, 0.2, h, c * 0.9, TEX_FABRIC),
                       _box(-l / 2 + arm / 2, 0, 0, arm, w, 0.62, c * 0.95, TEX_FABRIC),
                       _box(l / 2 - arm / 2, 0, 0, arm, w, 0.62, c * 0.95, TEX_FABRIC)]


def _build_bed(rng):
    length, wid, hb = _u(rng, 1.9, 2.2), _u(rng, 0.9, 1.8), _u(rng, 0.9, 1.2)
    frame, sheet = _color(rng, "wood"), _color(rng, "white" if rng.random() < 0.5 else "fabric")
    # local x = width across the bed, local -y = headboard side (against the wall)
    return (wid, length, hb), [_box(0, 0.04, 0, wid, length - 0.08, 0.3, frame, TEX_WOOD),
                               _box(0, 0.04, 0.3, wid - 0.04, length - 0.12, 0.22, sheet, TEX_FABRIC),
                               _box(0, -length / 2 + 0.04, 0, wid, 0.08, hb, frame, TEX_WOOD)]


def _build_cabinet(rng):
    l, w, h = _u(rng, 0.6, 1.2), _u(rng, 0.4, 0.6), _u(rng, 0.7, 1.0)
    c = _color(rng, "wood" if rng.random() < 0.6 else "white")
    return (l, w, h), [_box(0, 0, 0, l, w - 0.02, h, c, TEX_WOOD),
                       _box(0, w / 2 - 0.02, h * 0.55, l * 0.6, 0.02, 0.03, _color(rng, "metal"))]


def _build_shelf(rng):
    l, w, h = _u(rng, 0.8, 1.2), _u(rng, 0.3, 0.4), _u(rng, 1.5, 2.0)
    c = _color(rng, "wood")
    parts = [_box(0, -0.02, 0, l, w - 0.04, h, c * 0.85, TEX_WOOD)]
    for k in range(1, 4):
        parts.append(_box(0, w / 2 - 0.03, h * k / 4 - 0.25, l * 0.9, 0.06, 0.22, _color(rng, "plastic"), TEX_CHECKER))
    return (l, w, h), parts


def _build_refrigerator(rng):
    l, w, h = _u(rng, 0.6, 0.9), _u(rng, 0.6, 0.75), _u(rng, 1.6, 1.9)
    c = _color(rng, "white" if rng.random() < 0.5 else "metal")
    return (l, w, h), [_box(0, -0.01, 0, l, w - 0.02, h, c),
                       _box(l / 2 - 0.08, w / 2 - 0.01, h * 0.45, 0.03, 0.02, 0.4, _color(rng, "dark"))]


def _build_toilet(rng):
    l, w, h = _u(rng, 0.38, 0.45), _u(rng, 0.65, 0.75), _u(rng, 0.75, 0.85)
    c = _color(rng, "white")
    return (l, w, h), [_cyl(0, 0.1, 0, l, 0.4, c), _box(0, -w / 2 + 0.1, 0, l, 0.2, h, c)]


def _build_sink(rng):
    l, w, h = _u(rng, 0.5, 0.9), _u(rng, 0.45, 0.6), _u(rng, 0.85, 0.95)
    return (l, w, h), [_box(0, 0, 0, l, w, h - 0.06, _color(rng, "wood"), TEX_WOOD),
                       _box(0, 0, h - 0.06, l, w, 0.06, _color(rng, "white"))]


def _build_trash_can(rng):
    """A square bin with a darker lid rim (plants are round and green; bins must not look like them)."""
    d, h = _u(rng, 0.25, 0.4), _u(rng, 0.35, 0.7)
    body = _color(rng, "metal" if rng.random() < 0.5 else "dark")
    return (d, d, h), [_box(0, 0, 0, d * 0.92, d * 0.92, h - 0.04, body),
                       _box(0, 0, h - 0.04, d, d, 0.04, body * 0.6)]


def _build_tv(rng):
    l, h = _u(rng, 0.9, 1.5), _u(rng, 0.55, 0.85)
    return (l, 0.25, h), [_box(0, 0, 0, 0.35, 0.25, 0.04, _color(rng, "dark")),
                          _box(0, 0, 0.04, 0.06, 0.04, 0.12, _color(rng, "dark")),
                          _box(0, 0, 0.12, l, 0.06, h - 0.12, _color(rng, "dark"), TEX_SCREEN)]


def _build_monitor(rng):
    l, h = _u(rng, 0.5, 0.7), _u(rng, 0.4, 0.55)
    return (l, 0.2, h), [_box(0, 0, 0, 0.22, 0.2, 0.02, _color(rng, "dark")),
                         _box(0, -0.04, 0.02, 0.04, 0.03, 0.12, _color(rng, "dark")),
                         _box(0, 0, 0.1, l, 0.04, h - 0.1, _color(rng, "dark"), TEX_SCREEN)]


def _build_lamp(rng):
    floor_lamp = rng.random() < 0.3
    d, h = _u(rng, 0.25, 0.45), (_u(rng, 1.4, 1.7) if floor_lamp else _u(rng, 0.4, 0.65))
    return (d, d, h), [_cyl(0, 0, 0, d * 0.6, 0.03, _color(rng, "metal")),
                       _cyl(0, 0, 0.03, 0.03, h * 0.7, _color(rng, "metal")),
                       _cyl(0, 0, h * 0.65, d, h * 0.35, _color(rng, "white"), TEX_FABRIC)]


def _build_plant(rng):
    """A terracotta pot with three tiers of foliage narrowing upwards (a small tree)."""
    d, h = _u(rng, 0.25, 0.5), _u(rng, 0.4, 1.2)
    green = _color(rng, "green")
    parts = [_cyl(0, 0, 0, d * 0.55, h * 0.25, _color(rng, "terracotta"))]
    for k, (width, share) in enumerate(((1.0, 0.3), (0.75, 0.25), (0.45, 0.2))):
        z0 = h * (0.25 + sum(sh for _, sh in ((1.0, 0.3), (0.75, 0.25), (0.45, 0.2))[:k]))
        parts.append(_cyl(0, 0, z0, d * width, h * share, green * (1.0 - 0.1 * k), TEX_FABRIC))
    return (d, d, h), parts


def _build_nightstand(rng):
    l, w, h = _u(rng, 0.4, 0.55), _u(rng, 0.35, 0.45), _u(rng, 0.45, 0.6)
    return (l, w, h), [_box(0, 0, 0, l, w, h, _color(rng, "wood"), TEX_WOOD)]


def _build_appliance(rng, l_rng, w_rng, h_rng, top_palette):
    l, w, h = _u(rng, *l_rng), _u(rng, *w_rng), _u(rng, *h_rng)
    return (l, w, h), [_box(0, 0, 0, l, w, h - 0.03, _color(rng, "white")),
                       _box(0, 0, h - 0.03, l, w, 0.03, _color(rng, top_palette))]


def _build_washer(rng):
    size, parts = _build_appliance(rng, (0.58, 0.62), (0.55, 0.62), (0.82, 0.88), "white")
    parts.append(_box(0, size[1] / 2 - 0.005, 0.3, 0.32, 0.01, 0.32, _color(rng, "dark"), TEX_SCREEN))
    return size, parts


def _build_stove(rng):
    """A white box with a dark hob, four burners and an oven window (washers have none of these)."""
    size, parts = _build_appliance(rng, (0.58, 0.76), (0.58, 0.65), (0.88, 0.93), "dark")
    l, w, h = size
    parts += [_cyl(sx * l / 4, sy * w / 4, h, 0.16, 0.015, _color(rng, "metal")) for sx in (-1, 1) for sy in (-1, 1)]
    parts.append(_box(0, w / 2 - 0.005, 0.15, l * 0.7, 0.01, 0.35, _color(rng, "dark"), TEX_SCREEN))
    return (l, w, h + 0.015), parts


def _build_microwave(rng):
    l, w, h = _u(rng, 0.45, 0.55), _u(rng, 0.35, 0.4), _u(rng, 0.27, 0.32)
    return (l, w, h), [_box(0, 0, 0, l, w - 0.01, h, _color(rng, "metal")),
                       _box(-0.05, w / 2 - 0.005, 0.04, l * 0.6, 0.01, h - 0.08, _color(rng, "dark"), TEX_SCREEN)]


def _build_laptop(rng):
    l, w = _u(rng, 0.32, 0.38), _u(rng, 0.22, 0.26)
    c = _color(rng, "metal")
    return (l, w, 0.24), [_box(0, 0, 0, l, w, 0.02, c), _box(0, -w / 2 + 0.01, 0.02, l, 0.02, 0.22, c * 0.6, TEX_SCREEN)]


def _build_backpack(rng):
    l, w, h = _u(rng, 0.28, 0.35), _u(rng, 0.15, 0.22), _u(rng, 0.4, 0.5)
    return (l, w, h), [_box(0, 0, 0, l, w, h, _color(rng, "plastic"), TEX_FABRIC)]


def _build_pillow(rng):
    l, w, h = _u(rng, 0.5, 0.65), _u(rng, 0.35, 0.45), _u(rng, 0.12, 0.18)
    return (l, w, h), [_box(0, 0, 0, l, w, h, _color(rng, "white" if rng.random() < 0.5 else "fabric"), TEX_FABRIC)]


BUILDERS = {
    "chair": _build_chair, "stool": _build_stool, "table": _build_table, "desk": _build_desk,
    "sofa": _build_sofa, "bed": _build_bed, "cabinet": _build_cabinet, "shelf": _build_shelf,
    "refrigerator": _build_refrigerator, "toilet": _build_toilet, "sink": _build_sink,
    "trash can": _build_trash_can, "tv": _build_tv, "monitor": _build_monitor, "lamp": _build_lamp,
    "plant": _build_plant, "nightstand": _build_nightstand, "washer": _build_washer,
    "stove": _build_stove, "microwave": _build_microwave, "laptop": _build_laptop,
    "backpack": _build_backpack, "pillow": _build_pillow,
}


def _instantiate(instance_id: int, category: str, size, parts: list[_LocalPart], base_xy, base_z: float,
                 yaw: float, support: int) -> SceneObject:
    """Place local parts at (base_xy, base_z) with ``yaw``; the box origin is its bottom centre."""
    rot = rotation_z(yaw)
    base = np.array([base_xy[0], base_xy[1], base_z])
    prims = [Primitive(p.shape, rot @ np.array(p.center) + base, np.array(p.size, dtype=float), yaw, p.color, p.texture)
             for p in parts]
    size = np.array(size, dtype=float)
    return SceneObject(instance_id, category, base + np.array([0.0, 0.0, size[2] / 2]), size, yaw, support, prims)


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------

def _wall_frame(wall: int, room: Room) -> tuple[np.ndarray, np.ndarray, float, float]:
    """For wall k (0: x=0, 1: x=W, 2: y=0, 3: y=D): a point on it, its along-wall unit vector,
    its length and the yaw that makes an object's local +y face into the room."""
    if wall == 0:
        return np.array([0.0, 0.0]), np.array([0.0, 1.0]), room.depth, -math.pi / 2
    if wall == 1:
        return np.array([room.width, 0.0]), np.array([0.0, 1.0]), room.depth, math.pi / 2
    if wall == 2:
        return np.array([0.0, 0.0]), np.array([1.0, 0.0]), room.width, 0.0
    return np.array([0.0, room.depth]), np.array([1.0, 0.0]), room.width, math.pi


def _inward(wall: int) -> np.ndarray:
    return np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]][wall])


def _sample_room(rng: np.random.Generator) -> Room:
    while True:
        area, aspect = _u(rng, 6.0, 80.0), _u(rng, 1.0, 1.8)
        width = math.sqrt(area * aspect)
        depth = area / width
        if min(width, depth) >= 2.2:
            break
    if rng.random() < 0.5:
        width, depth = depth, width
    wall = np.clip(np.array(_PALETTE["white"][rng.integers(3)]) * rng.uniform(0.75, 1.0, 3), 0, 1)
    wall_colors = np.stack([np.clip(wall * rng.uniform(0.95, 1.05), 0, 1) for _ in range(4)])
    pattern = "planks" if rng.random() < 0.6 else "tiles"
    floor = _color(rng, "wood") if pattern == "planks" else _color(rng, "white") * rng.uniform(0.7, 1.0)
    return Room(width, depth, _u(rng, 2.4, 3.2), floor, wall_colors, np.array([0.96, 0.96, 0.95]), pattern,
                _u(rng, 0.14, 0.22) if pattern == "planks" else _u(rng, 0.3, 0.6), int(rng.integers(1 << 30)))


def _place_openings(rng, room: Room, objects: list[SceneObject], n_windows: int) -> list[tuple[int, float, float]]:
    """Add one door and ``n_windows`` windows as thin wall boxes; returns their (wall, start, end)."""
    spans: list[tuple[int, float, float]] = []
    specs = [("door",)] + [("window",)] * n_windows
    for (category,) in specs:
        for _ in range(50):
            wall = int(rng.integers(4))
            origin, along, length, yaw = _wall_frame(wall, room)
            w = _u(rng, 0.8, 1.0) if category == "door" else _u(rng, 0.8, min(1.6, length - 0.6))
            if length < w + 0.6:
                continue
            s = _u(rng, 0.3, length - w - 0.3)
            if any(k == wall and s < e + 0.3 and s + w > b - 0.3 for k, b, e in spans):
                continue
            h = _u(rng, 2.0, 2.1) if category == "door" else _u(rng, 1.0, min(1.4, room.height - 1.3))
            z0 = 0.0 if category == "door" else _u(rng, 0.8, room.height - h - 0.25)
            thick = 0.04
            color = _color(rng, "wood") if category == "door" else np.array([0.62, 0.8, 0.95])
            texture = TEX_WOOD if category == "door" else TEX_PLAIN
            base = origin + along * (s + w / 2) + _inward(wall) * thick / 2
            parts = [_box(0, 0, 0, w, thick, h, color, texture)]
            objects.append(_instantiate(len(objects) + 1, category, (w, thick, h), parts, base, z0, yaw, -1))
            spans.append((wall, s, s + w))
            break
    return spans


def _floor_pose(rng, category: str, size, room: Room, spans) -> tuple[np.ndarray, float] | None:
    """A candidate floor position and yaw for ``category``; None if it cannot fit."""
    l, w = size[0], size[1]
    if category in AGAINST_WALL:
        wall = int(rng.integers(4))
        origin, along, length, yaw = _wall_frame(wall, room)
        if length < l + 0.1:
            return None
        s = _u(rng, l / 2 + 0.05, length - l / 2 - 0.05)
        if any(k == wall and s + l / 2 > b - 0.1 and s - l / 2 < e + 0.1 for k, b, e in spans):
            return None
        return origin + along * s + _inward(wall) * (w / 2 + 0.02), yaw
    margin = max(l, w) / 2 + 0.05
    if room.width < 2 * margin or room.depth < 2 * margin:
        return None
    xy = np.array([_u(rng, margin, room.width - margin), _u(rng, margin, room.depth - margin)])
    yaw = float(rng.uniform(-math.pi, math.pi)) if category in ("chair", "stool", "backpack", "trash can", "plant") \
        else float(rng.integers(4)) * math.pi / 2 + _u(rng, -0.15, 0.15)
    return xy, yaw


def _door_keepout(objects: list[SceneObject]) -> list[np.ndarray]:
    """Floor rectangles in front of each door that furniture must leave free."""
    zones = []
    for o in objects:
        if o.category == "door":
            fwd = rotation_z(o.yaw)[:2, 1]
            zones.append(rect_corners(o.center[:2] + fwd * 0.5, (o.size[0] + 0.2, 1.0), o.yaw))
    return zones


def _fits_floor(foot: np.ndarray, room: Room, objects: list[SceneObject]) -> bool:
    """Inside the room, clear of floor furniture (5 cm gap) and of the space in front of doors."""
    if foot.min(0)[0] < 0 or foot.min(0)[1] < 0 or foot.max(0)[0] > room.width or foot.max(0)[1] > room.depth:
        return False
    blockers = [o.footprint() for o in objects if o.support == 0] + _door_keepout(objects)
    return not any(rects_overlap(foot, b, margin=0.05) for b in blockers)


def _try_floor(rng, category, room, objects, spans, free_check, built=None) -> bool:
    size, parts = built or BUILDERS[category](rng)
    pose = _floor_pose(rng, category, size, room, spans)
    if pose is None:
        return False
    xy, yaw = pose
    if not _fits_floor(rect_corners(xy, size, yaw), room, objects):
        return False
    obj = _instantiate(len(objects) + 1, category, size, parts, xy, 0.0, yaw, 0)
    if not free_check(objects + [obj]):
        return False
    objects.append(obj)
    if category in CHAIRS_AROUND:
        _chairs_around(rng, obj, room, objects, free_check)
    return True


def _chairs_around(rng, table: SceneObject, room: Room, objects: list[SceneObject], free_check) -> None:
    """Pull chairs up to a table (both long sides) or a desk (its front), each facing it."""
    lo, hi = CHAIRS_AROUND[table.category]
    wanted = int(rng.integers(lo, hi + 1))
    rot = rotation_z(table.yaw)[:2, :2]
    sides = (1.0,) if table.category == "desk" else (1.0, -1.0)  # desks stand against a wall (back = -y)
    slots = [(sx * table.size[0] / 4 if table.size[0] > 1.1 else 0.0, sy) for sy in sides for sx in (-1, 1)]
    for k in rng.permutation(len(slots)):
        if wanted == 0:
            break
        along, side = slots[k]
        size, parts = _build_chair(rng)
        offset = side * (table.size[1] / 2 + size[1] / 2 + _u(rng, 0.06, 0.2))  # just clear of the table
        xy = table.center[:2] + rot @ np.array([along, offset])
        yaw = table.yaw + (math.pi if side > 0 else 0.0) + _u(rng, -0.2, 0.2)  # backrest away from the table
        if not _fits_floor(rect_corners(xy, size, yaw), room, objects):
            continue
        chair = _instantiate(len(objects) + 1, "chair", size, parts, xy, 0.0, yaw, 0)
        if not free_check(objects + [chair]):
            continue
        objects.append(chair)
        wanted -= 1


def _try_on_top(rng, category, objects, built=None) -> bool:
    supports = [o for o in objects if o.category in ON_TOP[category]]
    if not supports:
        return False
    sup = supports[int(rng.integers(len(supports)))]
    size, parts = built or BUILDERS[category](rng)
    if size[2] > MAX_ON_TOP_HEIGHT.get(category, math.inf):
        return False
    top_l, top_w = sup.size[0], sup.size[1]
    if sup.category == "bed":  # pillows go near the headboard, laptops anywhere on the mattress
        top_w = sup.size[1] - 0.2
    if size[0] > top_l - 0.04 or size[1] > top_w - 0.04:
        return False
    rot = rotation_z(sup.yaw)[:2, :2]
    local = np.array([_u(rng, -(top_l - size[0]) / 2 + 0.02, (top_l - size[0]) / 2 - 0.02),
                      _u(rng, -(top_w - size[1]) / 2 + 0.02, (top_w - size[1]) / 2 - 0.02)])
    xy = sup.center[:2] + rot @ local
    yaw = sup.yaw
    foot = rect_corners(xy, size, yaw)
    if any(o.support == sup.instance_id and rects_overlap(foot, o.footprint(), margin=0.03) for o in objects):
        return False
    top_z = _support_height(sup)
    objects.append(_instantiate(len(objects) + 1, category, size, parts, xy, top_z, yaw, sup.instance_id))
    return True


def _support_height(sup: SceneObject) -> float:
    """Height of the surface an object rests on (mattress / seat for beds and sofas)."""
    bottom = sup.center[2] - sup.size[2] / 2
    if sup.category == "bed":
        return bottom + 0.52
    if sup.category == "sofa":
        return bottom + 0.45
    return bottom + sup.size[2]


def _place(rng, category, room, objects, spans, check, attempts: int = 1) -> bool:
    """Place one ``category`` object: small objects on a support (short lamps and plants too, tall
    ones on the floor), everything else on the floor; up to ``attempts`` tries."""
    for _ in range(attempts):
        if category in ON_TOP:
            built = BUILDERS[category](rng)
            if built[0][2] <= MAX_ON_TOP_HEIGHT.get(category, math.inf):
                if _try_on_top(rng, category, objects, built):
                    return True
                continue
            if _try_floor(rng, category, room, objects, spans, check, built):
                return True
        elif _try_floor(rng, category, room, objects, spans, check):
            return True
    return False


def generate_scene(seed: int, min_objects: int = 4, max_objects: int = 25, free_check=None) -> Scene:
    """Generate one room deterministically from ``seed``.

    The room type's anchor furniture comes first (:data:`ROOM_ANCHORS`), tables and desks get chairs,
    then furniture and small objects drawn by the type's frequencies (less often once present, but
    sometimes as a group, :data:`GROUPS`) fill the room up to a target count that grows with the floor
    area. ``free_check(room)`` may return a predicate
    ``(objects) -> bool`` that vetoes a floor placement (``trajectory.walkable_check`` keeps walkable
    space connected); by default any non-overlapping placement is accepted.
    """
    rng = np.random.default_rng(seed)
    room = _sample_room(rng)
    area = room.width * room.depth
    types = sorted(ROOM_TYPES)  # bathrooms only up to 20 m^2, and then as likely as all other types together
    odds = np.array([(3.0 if area <= BATHROOM_MAX_AREA else 0.0) if t == "bathroom" else 1.0 for t in types])
    room_type = types[int(rng.choice(len(types), p=odds / odds.sum()))]
    upper = int(np.clip(round(6 + area / 2), min_objects, max_objects))
    target = int(rng.integers(max(min_objects, round(0.6 * upper)), upper + 1))
    objects: list[SceneObject] = []
    n_windows = int(rng.integers(0, 3)) if target >= 6 else 0
    spans = _place_openings(rng, room, objects, n_windows)
    check = free_check(room) if free_check else (lambda objs: True)
    for category in ROOM_ANCHORS[room_type]:
        if len(objects) < target:
            _place(rng, category, room, objects, spans, check, attempts=30)
    weights = ROOM_TYPES[room_type]
    cats = sorted(weights)
    attempts = 0
    while len(objects) < target and attempts < 400:
        attempts += 1
        # categories already in the room are drawn less often, so most categories stay unique
        present = [sum(o.category == c for o in objects) for c in cats]
        probs = np.array([weights[c] / (1.0 + 4.0 * n) for c, n in zip(cats, present)])
        category = cats[int(rng.choice(len(cats), p=probs / probs.sum()))]
        if _place(rng, category, room, objects, spans, check) and category in GROUPS and rng.random() < GROUP_CHANCE:
            for _ in range(int(rng.integers(1, GROUPS[category] + 1))):
                if len(objects) < target:
                    _place(rng, category, room, objects, spans, check, attempts=5)
    return Scene(seed, room_type, room, objects[:max_objects])
