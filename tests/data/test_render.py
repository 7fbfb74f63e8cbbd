"""Geometry of generated scenes, trajectories and rendered frames."""

import math

import numpy as np
import pytest

from modeling_spa3r.data import io as dio
from modeling_spa3r.data.render import WALL_SIDES, pack_scene, render
from modeling_spa3r.data.scenes import CLASS_INDEX, SEMANTIC_CLASSES, generate_scene, rects_overlap
from modeling_spa3r.data.synthetic import SynthConfig
from modeling_spa3r.data.trajectory import free_space, intrinsics_from_hfov, make_trajectory, walkable_check


def _backproject(depth, k, cam_to_world):
    """World points (H, W, 3) of every pixel from z-depth, intrinsics and a camera-to-world pose."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    cam = np.stack([(u - k[0, 2]) / k[0, 0] * depth, (v - k[1, 2]) / k[1, 1] * depth, depth], -1)
    return np.einsum("ij,hwj->hwi", cam_to_world[:3, :3], cam) + cam_to_world[:3, 3]


def _inside_box(points, obj, tol):
    """Boolean per point (N, 3): inside the object's oriented box grown by ``tol``."""
    c, s = math.cos(obj["yaw"]), math.sin(obj["yaw"])
    rel = points - np.array(obj["center"])
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
    return np.all(np.abs(local) <= np.array(obj["size"]) / 2 + tol, axis=1)


def test_reprojected_depth_lands_on_object_boxes_and_room_surfaces(synth_root):
    for scene_dir in sorted((synth_root / "scenes").iterdir()):
        meta = dio.read_json(scene_dir / "scene.json")
        room = meta["room"]
        objects = {o["instance_id"]: o for o in meta["objects"]}
        k = dio.read_intrinsics(scene_dir / "intrinsic" / "intrinsic_color.txt")
        for i in (0, 17, 47):
            depth = dio.read_depth(scene_dir / "depth" / f"{i}.png")
            pose = dio.read_matrix(scene_dir / "pose" / f"{i}.txt")
            ids = dio.read_label(scene_dir / "instance" / f"{i}.png")
            pts = _backproject(depth, k, pose)
            assert (depth > 0).all()
            for iid in np.unique(ids[ids > 0]):
                assert _inside_box(pts[ids == iid], objects[int(iid)], tol=0.01).all(), (scene_dir.name, i, iid)
            shell = pts[ids == 0]
            bounds = np.array([room["width"], room["depth"], room["height"]])
            gap = np.minimum(np.abs(shell), np.abs(shell - bounds)).min(1)  # distance to the nearest wall plane
            assert (gap < 0.01).all()
            assert ((shell > -0.01) & (shell < bounds + 0.01)).all()


def test_scene_is_deterministic_and_physically_valid():
    for seed in range(12):
        scene = generate_scene(seed, free_check=walkable_check)
        assert scene.to_json() == generate_scene(seed, free_check=walkable_check).to_json()
        room = scene.room
        assert 6.0 <= room.width * room.depth <= 80.0 and 2.4 <= room.height <= 3.2
        assert 4 <= len(scene.objects) <= 25
        assert [o.instance_id for o in scene.objects] == list(range(1, len(scene.objects) + 1))
        assert sum(o.category == "door" for o in scene.objects) == 1
        by_id = {o.instance_id: o for o in scene.objects}
        floor = [o for o in scene.objects if o.support == 0]
        for a in floor:
            foot = a.footprint()
            assert foot.min() >= -1e-9 and (foot.max(0) <= [room.width + 1e-9, room.depth + 1e-9]).all()
            assert abs(a.center[2] - a.size[2] / 2) < 1e-9
            assert not any(rects_overlap(foot, b.footprint()) for b in floor if b is not a)
        for o in scene.objects:
            if o.support > 0:
                sup = by_id[o.support]
                assert o.center[2] - o.size[2] / 2 > sup.center[2] - sup.size[2] / 2
                assert o.center[2] - o.size[2] / 2 <= sup.center[2] + sup.size[2] / 2 + 1e-9
                c, s = math.cos(sup.yaw), math.sin(sup.yaw)
                rel = o.footprint() - sup.center[:2]
                local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], 1)
                assert (np.abs(local) <= sup.size[:2] / 2 + 1e-6).all()
            if o.category in ("door", "window"):
                d = min(o.center[0], room.width - o.center[0], o.center[1], room.depth - o.center[1])
                assert d == pytest.approx(o.size[1] / 2, abs=1e-6)  # flush with a wall


#: Furniture a room of each type must have (independent of the generator's own table).
REQUIRED = {"bedroom": {"bed"}, "bathroom": {"toilet", "sink"}, "kitchen": {"refrigerator", "stove", "sink"},
            "living_room": {"sofa"}, "office": {"desk", "chair"}}


def test_rooms_are_furnished_by_type_with_small_objects_on_supports():
    types, multi = set(), 0
    for seed in range(20):
        scene = generate_scene(seed, free_check=walkable_check)
        cats = [o.category for o in scene.objects]
        types.add(scene.room_type)
        assert REQUIRED[scene.room_type] <= set(cats), (seed, scene.room_type, cats)
        assert len(scene.objects) >= 6
        multi += any(cats.count(c) >= 2 for c in set(cats))
        for o in scene.objects:
            if o.category in ("tv", "monitor", "microwave", "laptop", "pillow"):
                assert o.support > 0, (seed, o.category)  # always on a piece of furniture
            if o.category in ("lamp", "plant"):  # table lamps / small plants stand on furniture, tall ones on the floor
                assert (o.support > 0) == (o.size[2] <= {"lamp": 0.8, "plant": 0.6}[o.category]), (seed, o.category)
    assert multi >= 15  # most rooms have something to count
    for room_type in set(REQUIRED) - types:  # the first room of each type not seen yet
        scene = next(s for s in (generate_scene(seed) for seed in range(20, 400)) if s.room_type == room_type)
        assert REQUIRED[room_type] <= {o.category for o in scene.objects}, (scene.seed, room_type)


def test_look_alike_categories_have_distinct_shapes():
    from modeling_spa3r.data.scenes import BUILDERS, SHAPE_BOX, SHAPE_CYLINDER

    rng = np.random.default_rng(0)
    for _ in range(5):
        _, plant = BUILDERS["plant"](rng)
        _, bin_parts = BUILDERS["trash can"](rng)
        _, stove = BUILDERS["stove"](rng)
        _, washer = BUILDERS["washer"](rng)
        assert [p.shape for p in plant].count(SHAPE_CYLINDER) >= 4  # pot + three tiers of foliage
        assert all(p.shape == SHAPE_BOX for p in bin_parts)  # square bins, round plants
        assert [p.shape for p in stove].count(SHAPE_CYLINDER) == 4 and SHAPE_CYLINDER not in [p.shape for p in washer]


def test_camera_keeps_objects_in_view():
    shares = []
    for seed in (3, 8, 11):
        scene = generate_scene(seed, free_check=walkable_check)
        traj = make_trajectory(np.random.default_rng([seed, 1]), scene.room, scene.objects, 40)
        packed, k = pack_scene(scene), traj.intrinsics(40, 30)
        shares += [(render(packed, k, pose, 40, 30).instance > 0).mean() for pose in traj.cam_to_world]
    shares = np.array(shares)
    assert (shares < 0.05).mean() <= 0.1 and shares.mean() > 0.2  # few blank-wall frames


def test_wall_labels_name_the_plane_each_pixel_lies_on():
    scene = generate_scene(4, free_check=walkable_check)
    traj = make_trajectory(np.random.default_rng(4), scene.room, scene.objects, 12)
    packed, k = pack_scene(scene), traj.intrinsics(64, 48)
    planes = {0: (0, 0.0), 1: (0, scene.room.width), 2: (1, 0.0), 3: (1, scene.room.depth)}  # WALL_SIDES order
    seen = set()
    for pose in traj.cam_to_world:
        frame = render(packed, k, pose, 64, 48)
        shell_wall = (frame.instance == 0) & (frame.semantic == CLASS_INDEX["wall"])
        assert np.array_equal(frame.wall >= 0, shell_wall)  # objects in front of a wall hide it
        points = _backproject(frame.depth, k, pose)
        for w, (axis, value) in planes.items():
            on = frame.wall == w
            assert np.abs(points[on][:, axis] - value).max(initial=0) < 0.01, WALL_SIDES[w]
            seen |= {w} if on.any() else set()
    assert seen == set(planes)


def test_scan_shows_every_wall_at_eight_of_its_frames():
    """The camera turns once around the room (the room size is then in the video); 8 uniform frames of 32, as a
    VLM samples them, still show every wall of every room."""
    config = SynthConfig(width=112, height=84, frames=32)
    for seed in range(6):
        scene = generate_scene(seed, config.min_objects, config.max_objects, free_check=walkable_check)
        traj = make_trajectory(np.random.default_rng([seed, 1]), scene.room, scene.objects, config.frames)
        packed, k = pack_scene(scene), traj.intrinsics(config.width, config.height)
        poses = traj.cam_to_world[np.floor(np.linspace(0, config.frames - 1, 8)).astype(int)]
        wall_pixels = np.stack([np.bincount(render(packed, k, pose, config.width, config.height).wall.ravel() + 1,
                                            minlength=5)[1:] for pose in poses])  # (8, 4) fmt: skip
        assert (wall_pixels >= config.visibility_min_pixels()).any(0).all(), (seed, wall_pixels)


def test_trajectory_walks_free_space_at_eye_height():
    scene = generate_scene(5, free_check=walkable_check)
    traj = make_trajectory(np.random.default_rng(0), scene.room, scene.objects, 90)
    assert 60.0 <= traj.hfov_deg <= 90.0
    pos = traj.cam_to_world[:, :3, 3]
    assert ((pos[:, 2] > 1.3) & (pos[:, 2] < 1.7)).all()
    free = free_space(scene.room, scene.objects, clearance=0.25)
    cells = (pos[:, :2] / 0.1).astype(int)
    assert free[cells[:, 1], cells[:, 0]].all()
    assert np.linalg.norm(np.diff(pos, axis=0), axis=1).max() < 0.5  # smooth walk, no jumps
    rot = traj.cam_to_world[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rot), 1.0)
    assert (rot[:, 2, 1] < -0.5).all()  # camera +y (image down) points down in the world: upright camera


def test_intrinsics_follow_opencv_pixel_centres():
    k = intrinsics_from_hfov(90.0, 200, 100)
    assert k[0, 0] == pytest.approx(100.0) and k[1, 1] == pytest.approx(100.0)
    assert (k[0, 2], k[1, 2]) == (99.5, 49.5)


def test_render_any_resolution_normals_and_labels():
    scene = generate_scene(2, free_check=walkable_check)
    traj = make_trajectory(np.random.default_rng(1), scene.room, scene.objects, 10)
    packed = pack_scene(scene)
    for w, h in ((37, 23), (160, 120)):
        frame = render(packed, traj.intrinsics(w, h), traj.cam_to_world[3], w, h)
        assert frame.rgb.shape == (h, w, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == frame.instance.shape == frame.semantic.shape == (h, w)
        assert np.allclose(np.linalg.norm(frame.normal, axis=-1), 1.0, atol=1e-5)
        k = traj.intrinsics(w, h)
        u, v = np.meshgrid(np.arange(w), np.arange(h))
        rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, dtype=float)], -1)
        assert (np.sum(frame.normal * rays, -1) <= 1e-6).all()  # normals face the camera
        assert set(np.unique(frame.semantic)) <= set(range(len(SEMANTIC_CLASSES)))
        structure = frame.instance == 0
        assert (frame.semantic[structure] <= 3).all() and (frame.semantic[~structure] > 3).all()


def test_floor_normals_point_up_in_world(synth_root):
    scene_dir = sorted((synth_root / "scenes").iterdir())[0]
    pose = dio.read_matrix(scene_dir / "pose" / "5.txt")
    normal = dio.read_normal(scene_dir / "normal" / "5.png")
    semantic = dio.read_label(scene_dir / "semantic" / "5.png", "semantic")
    floor = normal[semantic == SEMANTIC_CLASSES.index("floor")]
    world = floor @ pose[:3, :3].T
    assert len(world) > 0 and np.allclose(world, [0, 0, 1], atol=0.01)
