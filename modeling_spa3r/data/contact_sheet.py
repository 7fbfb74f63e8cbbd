"""Contact sheets: one scene folder (frames, depth, instance masks, top-down map), or several rooms
side by side (:func:`write_rooms_sheet`: a row of frames and the map per room).

The top-down map (room outline, object footprints with labels, camera path with viewing
directions) needs ``scene.json`` (synthetic scenes); for real scans only the camera path is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import io as dio
from .datasets import SceneFolder
from .scenes import rect_corners


def _instance_colors(ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random colour (H, W, 3) per instance id; id 0 is dark grey."""
    palette = np.random.default_rng(12345).uniform(0.2, 1.0, size=(int(ids.max()) + 1, 3))
    palette[0] = 0.15
    return palette[ids]


def _top_down(ax, scene: SceneFolder, meta: dict | None) -> None:
    if meta is not None:
        room = meta["room"]
        ax.add_patch(_polygon([[0, 0], [room["width"], 0], [room["width"], room["depth"]], [0, room["depth"]]],
                              fill=False, edgecolor="black", linewidth=2))
        cmap = _category_colors(sorted({o["category"] for o in meta["objects"]}))
        for obj in meta["objects"]:
            corners = rect_corners(np.array(obj["center"][:2]), np.array(obj["size"][:2]), obj["yaw"])
            ax.add_patch(_polygon(corners, facecolor=cmap[obj["category"]], alpha=0.55, edgecolor="black",
                                  linewidth=0.6))
            ax.text(obj["center"][0], obj["center"][1], f"{obj['category']}\n#{obj['instance_id']}", fontsize=6,
                    ha="center", va="center")
    pos = scene.cam_to_world[:, :3, 3]
    ax.plot(pos[:, 0], pos[:, 1], "-", color="tab:red", linewidth=1.2, label="camera path")
    ax.plot(pos[0, 0], pos[0, 1], "o", color="tab:green", label="start")
    every = max(1, len(pos) // 16)
    fwd = scene.cam_to_world[::every, :3, 2]
    ax.quiver(pos[::every, 0], pos[::every, 1], fwd[:, 0], fwd[:, 1], color="tab:red", scale=12, width=0.004)
    ax.set_aspect("equal")
    ax.set_title("top-down (x right, y up)")
    ax.legend(loc="upper right", fontsize=6)


def _polygon(points, **kwargs):
    from matplotlib.patches import Polygon

    return Polygon(np.asarray(points), closed=True, **kwargs)


def _category_colors(categories: list[str]) -> dict:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return {c: cmap(i % 20) for i, c in enumerate(categories)}


def write_contact_sheet(scene_dir, out_path, num_frames: int = 6) -> Path:
    """Write a PNG with ``num_frames`` evenly spaced frames (RGB / depth / instances) and a top-down map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scene = SceneFolder(scene_dir)
    meta_path = Path(scene_dir) / "scene.json"
    meta = dio.read_json(meta_path) if meta_path.is_file() else None
    picks = np.unique(np.linspace(0, len(scene) - 1, num_frames).round().astype(int))
    fig = plt.figure(figsize=(2.4 * len(picks) + 6, 7.5), dpi=100)
    grid = fig.add_gridspec(3, len(picks) + 3)
    for col, i in enumerate(picks):
        stem = Path(scene.color_files[i]).stem
        rgb = dio.read_color(scene.path / "color" / scene.color_files[i])
        depth = dio.read_depth(scene.path / "depth" / f"{stem}.png")
        rows = [(rgb, f"frame {i}"), (depth, "depth (m)")]
        inst_path = scene.path / "instance" / f"{stem}.png"
        if inst_path.is_file():
            rows.append((_instance_colors(dio.read_label(inst_path)), "instances"))
        for row, (image, title) in enumerate(rows):
            ax = fig.add_subplot(grid[row, col])
            if image.ndim == 2:
                im = ax.imshow(image, cmap="turbo", vmin=0, vmax=max(float(depth.max()), 1e-3))
                if col == len(picks) - 1:
                    fig.colorbar(im, ax=ax, fraction=0.046)
            else:
                ax.imshow(image)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    _top_down(fig.add_subplot(grid[:, len(picks):]), scene, meta)
    name = scene.path.name if meta is None else f"{scene.path.name} ({meta['room_type']}, {len(meta['objects'])} objects)"
    fig.suptitle(name)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, metadata={"Software": None})
    plt.close(fig)
    return out_path


def write_rooms_sheet(scene_dirs, out_path, frames_per_room: int = 5) -> Path:
    """Write a PNG with one row per room: ``frames_per_room`` evenly spaced frames and its top-down map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scene_dirs = [Path(d) for d in scene_dirs]
    if not scene_dirs:
        raise ValueError("write_rooms_sheet needs at least one scene folder")
    fig = plt.figure(figsize=(2.6 * frames_per_room + 3.2, 2.4 * len(scene_dirs)), dpi=100)
    grid = fig.add_gridspec(len(scene_dirs), frames_per_room + 1, width_ratios=[1.0] * frames_per_room + [1.25])
    for row, scene_dir in enumerate(scene_dirs):
        scene = SceneFolder(scene_dir)
        meta_path = scene_dir / "scene.json"
        meta = dio.read_json(meta_path) if meta_path.is_file() else None
        picks = np.linspace(0, len(scene) - 1, frames_per_room).round().astype(int)
        for col, i in enumerate(picks):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(dio.read_color(scene.path / "color" / scene.color_files[i]))
            ax.set_title(f"frame {i}", fontsize=7)
            ax.axis("off")
        if meta is None:
            label = scene.path.name
        else:
            label = f"{meta['room_type']}, {len(meta['objects'])} objects, {meta['room']['floor_area']:.1f} m^2"
        fig.axes[-frames_per_room].text(-0.04, 0.5, label, transform=fig.axes[-frames_per_room].transAxes,
                                        rotation=90, ha="right", va="center", fontsize=7)
        ax = fig.add_subplot(grid[row, frames_per_room])
        _top_down(ax, scene, meta)
        ax.set_title("")
        ax.get_legend().remove()
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, metadata={"Software": None})
    plt.close(fig)
    return out_path
