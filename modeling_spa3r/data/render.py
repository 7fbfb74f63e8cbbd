"""Vectorised numpy ray caster for procedural rooms.

Rays are cast through pixel centres of an OpenCV pinhole camera. The ray direction in camera space
is ((u - cx) / fx, (v - cy) / fy, 1), so the ray parameter ``t`` of a hit IS its z-depth. Every ray
hits the room shell (the camera is inside the room); objects are tested only for the pixels inside
their projected bounding rectangle, all (ray, primitive) pairs of a frame in one vectorised batch.

Outputs per frame: RGB (Lambert + headlight shading on procedural textures), metric z-depth,
instance ids (0 = room structure), semantic class ids (see ``scenes.SEMANTIC_CLASSES``) and
camera-frame unit normals facing the camera.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .scenes import (CLASS_INDEX, SHAPE_BOX, SHAPE_CYLINDER, TEX_CHECKER, TEX_FABRIC, TEX_SCREEN, TEX_WOOD,
                     Room, Scene)

NEAR = 0.02  # metres; hits closer than this are ignored
_LIGHT = np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9])
_WALL_CLASS, _FLOOR_CLASS, _CEILING_CLASS = CLASS_INDEX["wall"], CLASS_INDEX["floor"], CLASS_INDEX["ceiling"]


@dataclass
class PackedScene:
    """Struct-of-arrays view of a scene's P primitives, ready for the ray caster."""

    shape: np.ndarray  # (P,) int
    center: np.ndarray  # (P, 3)
    half: np.ndarray  # (P, 3) half extents
    cos: np.ndarray  # (P,)
    sin: np.ndarray  # (P,)
    color: np.ndarray  # (P, 3)
    texture: np.ndarray  # (P,) int
    instance: np.ndarray  # (P,) uint16
    semantic: np.ndarray  # (P,) uint8
    room: Room


@dataclass
class Frame:
    """One rendered view."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres (z-depth)
    instance: np.ndarray  # (H, W) uint16, 0 = structure
    semantic: np.ndarray  # (H, W) uint8
    normal: np.ndarray  # (H, W, 3) float32, camera frame
    wall: np.ndarray  # (H, W) int8, the wall a pixel shows (WALL_SIDES order), -1 elsewhere


def pack_scene(scene: Scene) -> PackedScene:
    """Flatten a scene's object primitives into arrays."""
    prims, ids = scene.primitives()
    cats = {o.instance_id: o.category for o in scene.objects}
    return PackedScene(
        shape=np.array([p.shape for p in prims], dtype=np.int64).reshape(-1),
        center=np.array([p.center for p in prims], dtype=np.float64).reshape(-1, 3),
        half=np.array([p.size for p in prims], dtype=np.float64).reshape(-1, 3) / 2,
        cos=np.cos([p.yaw for p in prims]).reshape(-1),
        sin=np.sin([p.yaw for p in prims]).reshape(-1),
        color=np.array([p.color for p in prims], dtype=np.float64).reshape(-1, 3),
        texture=np.array([p.texture for p in prims], dtype=np.int64).reshape(-1),
        instance=np.array(ids, dtype=np.uint16).reshape(-1),
        semantic=np.array([CLASS_INDEX[cats[i]] for i in ids], dtype=np.uint8).reshape(-1),
        room=scene.room,
    )


def _hash(*coords: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) for integer lattice coordinates."""
    h = np.full(np.shape(coords[0]), (seed * 0x9E3779B1) & 0xFFFFFFFF, dtype=np.uint32)
    for k, c in enumerate(coords):
        h ^= (np.asarray(c).astype(np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32((0x85EBCA6B + 0x2C1B3C6D * k) & 0xFFFFFFFF)
        h = (h ^ (h >> np.uint32(15))) * np.uint32(0x27D4EB2F)
    h ^= h >> np.uint32(13)
    return h.astype(np.float64) / 4294967296.0


def _matvec(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``v @ m`` for (..., 3) x (3, n) without BLAS, so results do not depend on BLAS threading."""
    return v[..., 0:1] * m[0] + v[..., 1:2] * m[1] + v[..., 2:3] * m[2]


def _rays(k: np.ndarray, cam_to_world: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space and world-space ray directions, each (H*W, 3), z_cam = 1."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    d_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    return d_cam, _matvec(d_cam, cam_to_world[:3, :3].T)


def _room_hit(room: Room, origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the room shell (R,) and the surface hit (R,): 0 x=0, 1 x=W, 2 y=0, 3 y=D, 4 floor, 5 ceiling."""
    upper = np.array([room.width, room.depth, room.height])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (upper - origin) / d, np.where(d < 0, -origin / d, np.inf))  # (R, 3)
    axis = np.argmin(t, axis=1)
    t_hit = t[np.arange(len(d)), axis]
    positive = d[np.arange(len(d)), axis] > 0
    surface = np.array([0, 2, 4])[axis] + positive
    return t_hit, surface


_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


def _screen_rects(packed: PackedScene, k: np.ndarray, cam_to_world: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel rectangles (P, 4) = (x0, y0, x1, y1), exclusive ends, covering each primitive's projection."""
    sx = np.array([-1, 1, 1, -1, -1, 1, 1, -1.0])
    sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1.0])
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1.0])
    lx, ly = packed.half[:, :1] * sx, packed.half[:, 1:2] * sy  # (P, 8)
    wx = packed.center[:, :1] + packed.cos[:, None] * lx - packed.sin[:, None] * ly
    wy = packed.center[:, 1:2] + packed.sin[:, None] * lx + packed.cos[:, None] * ly
    wz = packed.center[:, 2:3] + packed.half[:, 2:3] * sz
    corners = np.stack([wx, wy, wz], -1) - cam_to_world[:3, 3]
    cam = _matvec(corners, cam_to_world[:3, :3])  # (P, 8, 3) camera frame
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]  # (P, 12, 3) box edges
    za, zb = a[..., 2], b[..., 2]
    crossing = (za > NEAR) != (zb > NEAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        clipped = a + ((NEAR - za) / (zb - za))[..., None] * (b - a)  # edge points on the near plane
    points = np.concatenate([cam, clipped], 1)  # (P, 20, 3)
    valid = np.concatenate([cam[..., 2] > NEAR, crossing], 1)
    z = np.where(valid, points[..., 2], 1.0)
    u = np.where(valid, k[0, 0] * points[..., 0] / z + k[0, 2], np.nan)
    v = np.where(valid, k[1, 1] * points[..., 1] / z + k[1, 2], np.nan)
    visible = valid.any(1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rects = np.stack([np.floor(np.nanmin(u, 1)), np.floor(np.nanmin(v, 1)),
                          np.ceil(np.nanmax(u, 1)) + 1, np.ceil(np.nanmax(v, 1)) + 1], 1)
    rects[~visible] = 0
    rects[:, [0, 2]] = np.clip(rects[:, [0, 2]], 0, width)
    rects[:, [1, 3]] = np.clip(rects[:, [1, 3]], 0, height)
    return rects.astype(np.int64)


def _pairs(rects: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """All (primitive, ray) index pairs inside the rectangles."""
    w = np.maximum(rects[:, 2] - rects[:, 0], 0)
    h = np.maximum(rects[:, 3] - rects[:, 1], 0)
    area = w * h
    prim = np.repeat(np.arange(len(rects)), area)
    offset = np.arange(area.sum()) - np.repeat(np.cumsum(area) - area, area)
    wp = np.maximum(w[prim], 1)
    row = rects[prim, 1] + offset // wp
    col = rects[prim, 0] + offset % wp
    return prim, row * width + col


def _intersect(packed: PackedScene, prim: np.ndarray, origin: np.ndarray, d: np.ndarray):
    """Hit distance (M,) (inf on a miss), local hit point (M, 3) and local normal (M, 3) per pair."""
    c, s = packed.cos[prim], packed.sin[prim]
    rel = origin - packed.center[prim]  # (M, 3)
    o = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
    dl = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
    half = packed.half[prim]
    t = np.full(len(prim), np.inf)
    normal = np.zeros((len(prim), 3))
    is_box = packed.shape[prim] == SHAPE_BOX
    if is_box.any():
        ob, db, hb = o[is_box], dl[is_box], half[is_box]
        db_safe = np.where(np.abs(db) < 1e-12, 1e-12, db)
        t1, t2 = (-hb - ob) / db_safe, (hb - ob) / db_safe
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        axis = np.argmax(tmin, axis=1)
        rows = np.arange(len(ob))
        tnear, tfar = tmin[rows, axis], tmax.min(1)
        hit = (tnear <= tfar) & (tnear > NEAR)
        t[is_box] = np.where(hit, tnear, np.inf)
        nb = np.zeros_like(ob)
        nb[rows, axis] = -np.sign(db_safe[rows, axis])
        normal[is_box] = nb
    is_cyl = packed.shape[prim] == SHAPE_CYLINDER
    if is_cyl.any():
        t[is_cyl], normal[is_cyl] = _cylinder(o[is_cyl], dl[is_cyl], half[is_cyl])
    return t, o + t[:, None] * dl, normal


def _cylinder(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray vs. capped vertical cylinder (radius half[:, 0], half height half[:, 2]) in local frame."""
    r, hz = half[:, 0], half[:, 2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1])
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - r ** 2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2 * a)
        z_side = o[:, 2] + t_side * d[:, 2]
        side_ok = (disc >= 0) & (a > 1e-12) & (np.abs(z_side) <= hz) & (t_side > NEAR)
        cap_z = np.where(d[:, 2] < 0, hz, -hz)
        t_cap = (cap_z - o[:, 2]) / d[:, 2]
        px, py = o[:, 0] + t_cap * d[:, 0], o[:, 1] + t_cap * d[:, 1]
        cap_ok = (np.abs(d[:, 2]) > 1e-12) & (px * px + py * py <= r * r) & (t_cap > NEAR)
    t_side = np.where(side_ok, t_side, np.inf)
    t_cap = np.where(cap_ok, t_cap, np.inf)
    use_cap = t_cap < t_side
    t = np.minimum(t_side, t_cap)
    hx, hy = o[:, 0] + t_side * d[:, 0], o[:, 1] + t_side * d[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        side_n = np.stack([hx / r, hy / r, np.zeros_like(r)], 1)
    cap_n = np.stack([np.zeros_like(r), np.zeros_like(r), np.sign(cap_z)], 1)
    normal = np.where(use_cap[:, None], cap_n, np.nan_to_num(side_n))
    return t, normal


def _object_albedo(packed: PackedScene, prim: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Per-pixel albedo (M, 3) of object hits from the primitive colour and procedural texture."""
    tex = packed.texture[prim]
    factor = np.ones(len(prim))
    x, y, z = local[:, 0], local[:, 1], local[:, 2]
    wood = tex == TEX_WOOD
    factor[wood] = 0.9 + 0.1 * np.sin(45 * (y[wood] + z[wood]) + 4 * np.sin(3 * x[wood]))
    fabric = tex == TEX_FABRIC
    factor[fabric] = 0.9 + 0.14 * _hash(np.floor(x[fabric] * 60), np.floor(y[fabric] * 60), np.floor(z[fabric] * 60))
    books = tex == TEX_CHECKER
    factor[books] = 0.55 + 0.7 * _hash(np.floor(x[books] * 22), prim[books])
    screen = tex == TEX_SCREEN
    factor[screen] = 1.0 + 1.6 * np.clip(0.5 + z[screen] / (2 * packed.half[prim[screen], 2]), 0, 1)
    return packed.color[prim] * factor[:, None]


def _room_albedo(room: Room, surface: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-pixel albedo (R, 3) of the room shell at world points ``p`` (R, 3)."""
    albedo = np.empty((len(p), 3))
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    floor = surface == 4
    fx, fy, s = x[floor], y[floor], room.floor_scale
    if room.floor_pattern == "planks":
        j = np.floor(fy / s)
        shift = _hash(j, seed=room.texture_seed) * 1.2
        i = np.floor((fx + shift) / 1.2)
        f = 0.82 + 0.3 * _hash(i, j, seed=room.texture_seed) + 0.05 * np.sin(70 * fx + 9 * _hash(j))
        seam = ((fy / s) % 1.0 < 0.04) | (((fx + shift) / 1.2) % 1.0 < 0.006)
    else:
        i, j = np.floor(fx / s), np.floor(fy / s)
        f = 0.93 + 0.12 * _hash(i, j, seed=room.texture_seed)
        seam = ((fx / s) % 1.0 < 0.012) | ((fy / s) % 1.0 < 0.012)
    albedo[floor] = room.floor_color * np.where(seam, 0.55, f)[:, None]
    ceiling = surface == 5
    albedo[ceiling] = room.ceiling_color
    wall = surface < 4
    along = np.where(surface[wall] < 2, y[wall], x[wall])
    noise = 0.96 + 0.05 * _hash(np.floor(along * 40), np.floor(z[wall] * 40), surface[wall], seed=room.texture_seed)
    skirting = np.where(z[wall] < 0.08, 0.75, 1.0)
    albedo[wall] = room.wall_colors[surface[wall]] * (noise * skirting)[:, None]
    return albedo


def _shade(albedo: np.ndarray, normal_w: np.ndarray, d: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Ambient + directional + headlight shading, mild distance falloff; returns uint8 (R, 3)."""
    view = d / np.linalg.norm(d, axis=1, keepdims=True)
    lambert = np.clip(_matvec(normal_w, _LIGHT[:, None])[:, 0], 0.0, None)
    head = np.abs(np.sum(normal_w * view, axis=1))
    light = (0.42 + 0.33 * lambert + 0.3 * head) * (1.05 - 0.035 * np.minimum(depth, 8.0))
    return np.round(np.clip(albedo * light[:, None], 0.0, 1.0) * 255).astype(np.uint8)


#: the room's walls in `Frame.wall` and `scene.json`'s "walls" (the room spans [0, width] x [0, depth])
WALL_SIDES = ("x=0", "x=width", "y=0", "y=depth")
_ROOM_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])


def render(packed: PackedScene, k: np.ndarray, cam_to_world: np.ndarray, width: int, height: int) -> Frame:
    """Render one view of ``packed`` with intrinsics ``k`` (3, 3) and camera-to-world pose (4, 4)."""
    origin = cam_to_world[:3, 3].astype(np.float64)
    d_cam, d = _rays(k, cam_to_world, width, height)  # (R, 3) each
    depth, surface = _room_hit(packed.room, origin, d)
    instance = np.zeros(len(d), dtype=np.uint16)
    semantic = np.where(surface == 4, _FLOOR_CLASS, np.where(surface == 5, _CEILING_CLASS, _WALL_CLASS)).astype(np.uint8)
    normal_w = _ROOM_NORMALS[surface]
    wall = np.where(surface < 4, surface, -1).astype(np.int8)
    albedo = _room_albedo(packed.room, surface, origin + depth[:, None] * d)
    if len(packed.shape):
        prim, ray = _pairs(_screen_rects(packed, k, cam_to_world, width, height), width)
        t, local, normal_l = _intersect(packed, prim, origin, d[ray])
        np.minimum.at(depth, ray, t)
        won = np.isfinite(t) & (t <= depth[ray])
        owner = np.full(len(d), -1)
        owner[ray[won]] = np.nonzero(won)[0]
        hit_rays = np.nonzero(owner >= 0)[0]
        pair = owner[hit_rays]
        p = prim[pair]
        instance[hit_rays] = packed.instance[p]
        wall[hit_rays] = -1
        semantic[hit_rays] = packed.semantic[p]
        c, s, n = packed.cos[p], packed.sin[p], normal_l[pair]
        normal_w = normal_w.copy()
        normal_w[hit_rays] = np.stack([c * n[:, 0] - s * n[:, 1], s * n[:, 0] + c * n[:, 1], n[:, 2]], 1)
        albedo[hit_rays] = _object_albedo(packed, p, local[pair])
    rgb = _shade(albedo, normal_w, d, depth)
    normal_c = _matvec(normal_w, cam_to_world[:3, :3])  # world -> camera frame
    flip = np.sum(normal_c * d_cam, axis=1) > 0
    normal_c[flip] *= -1
    return Frame(rgb=rgb.reshape(height, width, 3), depth=depth.reshape(height, width).astype(np.float32),
                 instance=instance.reshape(height, width), semantic=semantic.reshape(height, width),
                 normal=normal_c.reshape(height, width, 3).astype(np.float32), wall=wall.reshape(height, width))
