"""Linear probes of room-level properties from Spa3R latents: did pretraining put the room into the latent?

    spa3r probe runs/spa3r --rooms data/heldout --train_rooms data/train [--views 4 --random_seeds 0 1 2]

Rooms are scene folders with a `scene.json` (synthetic rooms from `spa3r synth`). Two families of properties:
- room properties, the same from any viewpoint (`room_properties`): floor area, length, width, object count,
  categories, object spread;
- the room's layout in the first view's frame (`room_layout`): distances from the first view's camera to the walls
  ahead, behind, right and left of it, and the objects' mean centre ahead of / right of it. PSFM expresses every
  camera relative to the first context view, so this layout is what its decoder needs from the latent to render
  other views; a latent that holds it as a map can still hold the invariant sizes only non-linearly.
Each room is encoded from K views
spread evenly along its trajectory; the latent (Q, D) is pooled to one vector per room (`pooling`: "mean" over the
queries, or "flatten" = all Q·D numbers, the default: the queries are distinct learned slots). A ridge regression per
property (features and target standardised on the train rooms, strength chosen by 5-fold cross-validation there)
is fitted on the train rooms and scored by R² on the held-out rooms. Without `--train_rooms` the rooms are
cross-fitted (5 folds, every room predicted by a probe that did not see it).

Baselines at the same probe: the same architecture at random initialisation (one row per init seed, summarised as
mean ± std), and `thumbnails`: the K views downsampled to 8×6 pixels and concatenated.
View invariance (room properties only; the layout changes with the first view): the held-out rooms are also encoded
from two disjoint sets of K spread views (A and B); the probe's predictions from A and B are compared as
rms(pred_A − pred_B) / std(target), 0 = the same prediction whatever views are seen.

`readout_room_size` asks the same probe a VLM's question: SynthVSI's room-size questions answered from the latent
(floor area fitted on train rooms) and scored with the VSI-Bench MRA, beside the same random baselines.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

#: properties of the room itself, the same from any viewpoint (`room_properties`)
ROOM_PROPERTIES = ("floor_area", "room_length", "room_width", "object_count", "num_categories", "mean_object_distance")
#: the room's layout in the horizontal frame of the first view the encoder sees (`room_layout`)
LAYOUT_PROPERTIES = ("wall_ahead", "wall_behind", "wall_right", "wall_left", "objects_ahead", "objects_right")
PROPERTIES = ROOM_PROPERTIES + LAYOUT_PROPERTIES
FAMILIES = {"room properties": ROOM_PROPERTIES, "layout in the first view's frame": LAYOUT_PROPERTIES}
RIDGE_STRENGTHS = tuple(10.0 ** np.arange(-2, 5.5, 0.5))
#: seed-row groups of `compare` and their keys in `Comparison.summary`
RANDOM_ENCODER = "random encoder, trained backbone"
GROUP_KEYS = {"random init": "random", "random init, no view slots": "random_no_slots", RANDOM_ENCODER: "random_encoder"}
SEEDED = tuple(GROUP_KEYS)
THUMBNAIL_SIZE = (8, 6)  # width, height


def room_properties(scene_json: dict) -> dict[str, float]:
    """Room-level properties of one room from its scene.json: floor area (m²), length and width of the floor (m,
    longer and shorter side), object count, distinct categories, mean pairwise 3-D distance of object centres (m)."""
    try:
        room, objects = scene_json["room"], scene_json["objects"]
        width, depth = float(room["width"]), float(room["depth"])
        centres = np.array([obj["center"] for obj in objects], dtype=np.float64).reshape(-1, 3)
        categories = {obj["category"] for obj in objects}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"scene.json lacks room width/depth or objects with center/category: {error!r}") from error
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(len(centres), 1)]
    return {
        "floor_area": width * depth,
        "room_length": max(width, depth),
        "room_width": min(width, depth),
        "object_count": float(len(objects)),
        "num_categories": float(len(categories)),
        "mean_object_distance": float(distances.mean()) if len(distances) else 0.0,
    }


def _distance_to_wall(position: np.ndarray, direction: np.ndarray, width: float, depth: float) -> float:
    """Distance from `position` (x, y) inside the floor [0, width] × [0, depth] along the unit `direction` to a wall."""
    limits = np.array([width, depth])
    moving = np.abs(direction) > 1e-9
    bounds = np.where(direction > 0, limits, 0.0)
    return float(np.min((bounds - position)[moving] / direction[moving]))


def room_layout(scene_json: dict, frame: int) -> dict[str, float]:
    """The room's layout seen from camera `frame` of scene.json (floor [0, width] × [0, depth], z up; OpenCV
    camera-to-world poses): along the camera's horizontal viewing direction the distance to the wall ahead and the
    wall behind it, along its horizontal right the distance to the walls right and left of it (m), and the mean
    object centre's offset ahead of and right of the camera (m)."""
    try:
        room, camera, objects = scene_json["room"], scene_json["camera"], scene_json["objects"]
        width, depth = float(room["width"]), float(room["depth"])
        cam_to_world = np.asarray(camera["cam_to_world"][frame], dtype=np.float64)
        centres = np.array([obj["center"] for obj in objects], dtype=np.float64).reshape(-1, 3)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"scene.json lacks room width/depth, camera.cam_to_world[{frame}] or object centres: {error!r}") from error
    if camera.get("pose", "camera_to_world") != "camera_to_world" or camera.get("convention", "opencv") != "opencv":
        raise ValueError(f"room_layout reads OpenCV camera-to-world poses, scene.json has {camera.get('convention')!r} "
                         f"{camera.get('pose')!r}")  # fmt: skip
    position, forward = cam_to_world[:2, 3], cam_to_world[:2, 2]  # OpenCV: the camera looks along its z axis
    if np.linalg.norm(forward) < 1e-6:
        raise ValueError(f"camera {frame} looks straight up or down: it has no horizontal viewing direction")
    forward = forward / np.linalg.norm(forward)
    right = np.array([forward[1], -forward[0]])  # z up: right of the viewing direction
    objects_offset = (centres[:, :2] - position).mean(0) if len(centres) else np.zeros(2)
    return {
        "wall_ahead": _distance_to_wall(position, forward, width, depth),
        "wall_behind": _distance_to_wall(position, -forward, width, depth),
        "wall_right": _distance_to_wall(position, right, width, depth),
        "wall_left": _distance_to_wall(position, -right, width, depth),
        "objects_ahead": float(objects_offset @ forward),
        "objects_right": float(objects_offset @ right),
    }


def find_rooms(root) -> list[Path]:
    """Scene folders with a scene.json under `root` (`root` itself, its sub-folders, or its `scenes/`)."""
    from .data.datasets import find_scenes

    rooms = [path for path in find_scenes(root) if (path / "scene.json").is_file()]
    if not rooms:
        raise ValueError(f"no room under {root} has a scene.json (the probe's targets come from it)")
    return rooms


def spread_frames(num_frames: int, num_views: int, offset: float = 0.5) -> list[int]:
    """`num_views` frame indices spread evenly along a trajectory: frame ⌊(i + offset)·N / K⌋ of each of K equal
    segments. Offsets 0.25 and 0.75 give two disjoint view sets when N ≥ 2K."""
    if num_frames < num_views:
        raise ValueError(f"a room has {num_frames} frames, fewer than the {num_views} views requested")
    return [min(num_frames - 1, int((i + offset) * num_frames / num_views)) for i in range(num_views)]


def room_views(room: Path, frames: list[int], width: int) -> torch.Tensor:
    """Frames of one room resized to `width` (cropped to multiples of 14) → (K, 3, H, W) in [0, 1]."""
    from .data.datasets import SceneFolder

    scene = SceneFolder(room)
    return torch.from_numpy(np.stack([scene.load_view(i, width)["pixel_values"] for i in frames]))


def thumbnails(views: torch.Tensor) -> np.ndarray:
    """The trivial image baseline: (K, 3, H, W) views → 8×6 thumbnails, concatenated (K·3·6·8,)."""
    small = torch.nn.functional.interpolate(views, THUMBNAIL_SIZE[::-1], mode="area")
    return small.flatten().numpy().astype(np.float64)


def pool_latent(latents: torch.Tensor, pooling: str) -> np.ndarray:
    """(Q, D) latent → one vector per room."""
    if pooling == "mean":
        return latents.mean(0).double().numpy()
    if pooling == "flatten":
        return latents.flatten().double().numpy()
    raise ValueError(f"pooling must be 'mean' or 'flatten', got {pooling!r}")


@dataclass
class RoomSet:
    """Per room: its properties (the layout seen from the "main" set's first view) and, per view set ("main", "A",
    "B"), its views."""

    rooms: list[Path]
    targets: np.ndarray  # (N, P) in PROPERTIES order
    views: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # set → per room (K, 3, H, W)


def load_rooms(rooms: list[Path], num_views: int, width: int, view_sets=("main",), progress: bool = True) -> RoomSet:
    """Properties and views of the rooms; view sets: "main" (offset 0.5), "A" (0.25), "B" (0.75)."""
    offsets = {"main": 0.5, "A": 0.25, "B": 0.75}
    targets, views = [], {name: [] for name in view_sets}
    for room in tqdm(rooms, desc="rooms", unit="room", disable=not progress):
        meta = json.loads((room / "scene.json").read_text())
        num_frames = len(list((room / "color").iterdir()))
        properties = {**room_properties(meta), **room_layout(meta, spread_frames(num_frames, num_views, offsets["main"])[0])}
        targets.append([properties[name] for name in PROPERTIES])
        for name in view_sets:
            views[name].append(room_views(room, spread_frames(num_frames, num_views, offsets[name]), width))
    return RoomSet(rooms, np.array(targets, dtype=np.float64), views)


@torch.inference_mode()
def encode_views(encoder, views: list[torch.Tensor], pooling: str) -> np.ndarray:
    """A `Spa3RModel` over each room's views → pooled latents (N, F)."""
    encoder.eval()
    return np.stack([pool_latent(encoder(pixel_values=v[None].to(encoder.dtype)).latents[0].float(), pooling) for v in views])


# ---------------------------------------------------------------------------------------------------------------------
# ridge probe
# ---------------------------------------------------------------------------------------------------------------------


def _ridge_fit(x: np.ndarray, y: np.ndarray, strengths) -> list[np.ndarray]:
    """Weights (F, P) of ridge regressions on centred x (N, F), y (N, P), one per strength (via one SVD)."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    return [vt.T @ ((s / (s**2 + alpha))[:, None] * uty) for alpha in strengths]


def _folds(num: int, num_folds: int, seed: int = 0) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(num), min(num_folds, num))


class RidgeProbe:
    """Standardised ridge regression per target column with its strength chosen by k-fold CV (lowest mean MSE)."""

    def __init__(self, strengths=RIDGE_STRENGTHS, num_folds: int = 5):
        self.strengths, self.num_folds = tuple(strengths), num_folds

    def fit(self, x: np.ndarray, y: np.ndarray) -> "RidgeProbe":
        if len(x) != len(y) or len(x) < 4:
            raise ValueError(f"need ≥ 4 rooms with features and targets, got {len(x)} / {len(y)}")
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-8
        self.y_mean, self.y_std = y.mean(0), y.std(0) + 1e-8
        xs, ys = (x - self.x_mean) / self.x_std, (y - self.y_mean) / self.y_std
        errors = np.zeros((len(self.strengths), y.shape[1]))
        for held in _folds(len(x), min(self.num_folds, len(x) // 2)):
            keep = np.setdiff1d(np.arange(len(x)), held)
            x_mean, y_mean = xs[keep].mean(0), ys[keep].mean(0)
            for i, weights in enumerate(_ridge_fit(xs[keep] - x_mean, ys[keep] - y_mean, self.strengths)):
                errors[i] += (((xs[held] - x_mean) @ weights + y_mean - ys[held]) ** 2).sum(0)
        best = errors.argmin(0)  # (P,)
        self.chosen = [self.strengths[i] for i in best]
        fitted = _ridge_fit(xs - xs.mean(0), ys - ys.mean(0), self.strengths)
        self.weights = np.stack([fitted[b][:, p] for p, b in enumerate(best)], axis=1)  # (F, P)
        self.offset = ys.mean(0) - xs.mean(0) @ self.weights
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (((x - self.x_mean) / self.x_std) @ self.weights + self.offset) * self.y_std + self.y_mean


def r2_scores(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R² per column against the mean of `target` itself (N, P) → (P,)."""
    total = ((target - target.mean(0)) ** 2).sum(0)
    return 1.0 - ((pred - target) ** 2).sum(0) / np.maximum(total, 1e-12)


def cross_fitted(x: np.ndarray, y: np.ndarray, num_folds: int = 5) -> np.ndarray:
    """Out-of-fold predictions (N, P): each room predicted by a probe fitted on the other folds."""
    pred = np.zeros_like(y)
    for held in _folds(len(x), num_folds, seed=1):
        keep = np.setdiff1d(np.arange(len(x)), held)
        pred[held] = RidgeProbe().fit(x[keep], y[keep]).predict(x[held])
    return pred


# ---------------------------------------------------------------------------------------------------------------------
# probing a representation
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """R² per property on the held-out rooms and the A/B view disagreement per room property (None when not measured)."""

    r2: dict[str, float]
    disagreement: dict[str, float] | None = None

    @property
    def mean_r2(self) -> float:
        return float(np.mean(list(self.r2.values())))

    def family_r2(self, family: str) -> float:
        """Mean R² over one of `FAMILIES`."""
        return float(np.mean([self.r2[name] for name in FAMILIES[family]]))


def probe_features(
    train_x: np.ndarray | None, train_y: np.ndarray | None, test_x: np.ndarray, test_y: np.ndarray,
    test_x_a: np.ndarray | None = None, test_x_b: np.ndarray | None = None,
) -> ProbeResult:
    """Fit on the train rooms (or cross-fit the test rooms when there are none) and score on the test rooms."""
    if train_x is None:
        pred = cross_fitted(test_x, test_y)
        disagreement = None
        if test_x_a is not None:
            pred_a, pred_b = cross_fitted(test_x_a, test_y), cross_fitted(test_x_b, test_y)
            disagreement = np.sqrt(((pred_a - pred_b) ** 2).mean(0)) / (test_y.std(0) + 1e-12)
    else:
        probe = RidgeProbe().fit(train_x, train_y)
        pred = probe.predict(test_x)
        disagreement = None
        if test_x_a is not None:
            diff = probe.predict(test_x_a) - probe.predict(test_x_b)
            disagreement = np.sqrt((diff**2).mean(0)) / (test_y.std(0) + 1e-12)
    r2 = dict(zip(PROPERTIES, r2_scores(pred, test_y).tolist()))
    return ProbeResult(r2, None if disagreement is None else dict(zip(ROOM_PROPERTIES, disagreement[: len(ROOM_PROPERTIES)].tolist())))


def probe_encoder(encoder, train: RoomSet | None, test: RoomSet, pooling: str = "flatten") -> ProbeResult:
    """Encode the rooms with a `Spa3RModel` and probe its pooled latents."""
    train_x = encode_views(encoder, train.views["main"], pooling) if train is not None else None
    extra = {}
    if "A" in test.views:
        extra = {"test_x_a": encode_views(encoder, test.views["A"], pooling), "test_x_b": encode_views(encoder, test.views["B"], pooling)}
    return probe_features(
        train_x, None if train is None else train.targets, encode_views(encoder, test.views["main"], pooling), test.targets, **extra
    )


def probe_thumbnails(train: RoomSet | None, test: RoomSet) -> ProbeResult:
    def features(views):
        return np.stack([thumbnails(v) for v in views])

    extra = {}
    if "A" in test.views:
        extra = {"test_x_a": features(test.views["A"]), "test_x_b": features(test.views["B"])}
    return probe_features(
        None if train is None else features(train.views["main"]), None if train is None else train.targets,
        features(test.views["main"]), test.targets, **extra,
    )  # fmt: skip


def random_init_encoder(config, seed: int):
    """The Spa3R encoder of a `Spa3RForPretraining` built from `config` after `torch.manual_seed(seed)` (the same
    initialisation `spa3r pretrain --seed SEED` starts from)."""
    from transformers import set_seed

    from .modeling_spa3r import Spa3RForPretraining

    set_seed(seed)
    return Spa3RForPretraining(config).spa3r.eval()


def seed_groups(named: dict) -> dict[str, list]:
    """Values of the seeded baseline rows ("<group> (seed S)", group in `SEEDED`) gathered by group, in order."""
    groups: dict[str, list] = {}
    for name, value in named.items():
        if name.startswith(SEEDED):
            groups.setdefault(name.rsplit(" (seed", 1)[0], []).append(value)
    return groups


def baseline_encoders(checkpoint, encoder, random_seeds=(0, 1, 2), progress: bool = True):
    """The random baselines of a checkpoint, one at a time: `(f"{group} (seed {s})", encoder)` for the groups
    "random init" (its architecture), "random init, no view slots" (the released architecture, for a model with view
    slots) and `RANDOM_ENCODER` (its trained aggregator under a random encoder, for a model with a trained backbone)."""
    from transformers import AutoConfig

    import modeling_spa3r  # noqa: F401  (registers the Auto classes)

    config = AutoConfig.from_pretrained(str(checkpoint))
    baselines = {"random init": config}
    if getattr(config, "view_slot_embeddings", 0):
        baselines["random init, no view slots"] = type(config).from_dict({**config.to_dict(), "view_slot_embeddings": 0})
    if config.train_backbone:
        baselines[RANDOM_ENCODER] = config
    for (group, baseline_config), seed in tqdm([(b, s) for b in baselines.items() for s in random_seeds],
                                               desc="random inits", disable=not progress):  # fmt: skip
        baseline = random_init_encoder(baseline_config, seed)
        if group == RANDOM_ENCODER:
            baseline.aggregator.load_state_dict(encoder.aggregator.state_dict())
        yield f"{group} (seed {seed})", baseline


@dataclass
class Comparison:
    """Probe results by representation name; seed rows are kept under "<group> (seed S)", where the group is
    "random init" (the checkpoint's architecture) or, for a model with view slots, also "random init, no view slots"
    (the released architecture: a random init whose slot codes would only add noise is not the only baseline); the
    target is to beat these. For a checkpoint with a trained backbone, "random encoder, trained backbone" keeps the
    checkpoint's aggregator and draws the rest at random: beating it shows what the PSFM encoder adds to the
    backbone's own features (reported as `beats_random_encoder`, not part of the target)."""

    results: dict[str, ProbeResult]
    num_train: int
    num_test: int

    def random_groups(self) -> dict[str, list[ProbeResult]]:
        """Seed rows by group: the random inits (the target's baselines) and, for a trained backbone, the random
        encoders on it."""
        return seed_groups(self.results)

    def random_seeds(self) -> list[ProbeResult]:
        return self.random_groups().get("random init", [])

    def summary(self) -> dict:
        """Per property: the checkpoint's R², random init mean / std / best over seeds (per group; `random_best` over
        the random-init groups), thumbnails, and whether the checkpoint beats the best random seed of every
        random-init group by more than that group's seed std (`beats_random`; `beats_random_encoder` for the random
        encoders on a trained backbone)."""
        rows = {}
        groups = self.random_groups()
        for prop in PROPERTIES:
            row = {name: r.r2[prop] for name, r in self.results.items() if not name.startswith(SEEDED)}
            if groups:
                beats = {}
                for group, seeds in groups.items():
                    values = np.array([r.r2[prop] for r in seeds])
                    key = GROUP_KEYS[group]
                    row.update({f"{key}_mean": float(values.mean()), f"{key}_std": float(values.std()),
                                f"{key}_best": float(values.max())})  # fmt: skip
                    beats[group] = row.get("checkpoint", -np.inf) > values.max() + values.std()
                row["random_best"] = max(row[f"{GROUP_KEYS[g]}_best"] for g in groups if g != RANDOM_ENCODER)
                if "checkpoint" in row:
                    row["beats_random"] = bool(all(won for group, won in beats.items() if group != RANDOM_ENCODER))
                    if RANDOM_ENCODER in beats:
                        row["beats_random_encoder"] = bool(beats[RANDOM_ENCODER])
            rows[prop] = row
        return rows

    def table(self) -> str:
        """Markdown table: R² per property and representation, mean R² and mean A/B disagreement."""
        groups = self.random_groups()
        named = [n for n in self.results if not n.startswith(SEEDED)]
        header = ["property"] + named + [f"{group} ({len(seeds)} seeds)" for group, seeds in groups.items()]
        encoder_row = "checkpoint" in named and RANDOM_ENCODER in groups
        if groups and "checkpoint" in named:
            header.append("ckpt > best random init + std")
        if encoder_row:
            header.append("ckpt > best random encoder + std")
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

        def spread(values):
            return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

        summary = self.summary()
        for family, properties in FAMILIES.items():
            for prop in properties:
                cells = [prop] + [f"{self.results[n].r2[prop]:.3f}" for n in named]
                cells += [spread([r.r2[prop] for r in seeds]) for seeds in groups.values()]
                if groups and "checkpoint" in named:
                    cells.append("yes" if summary[prop]["beats_random"] else "no")
                if encoder_row:
                    cells.append("yes" if summary[prop]["beats_random_encoder"] else "no")
                lines.append("| " + " | ".join(cells) + " |")
            cells = [f"**mean R², {family}**"] + [f"{self.results[n].family_r2(family):.3f}" for n in named]
            cells += [spread([r.family_r2(family) for r in seeds]) for seeds in groups.values()]
            for flag, shown in (("beats_random", groups and "checkpoint" in named), ("beats_random_encoder", encoder_row)):
                if shown:
                    cells.append(f"{sum(summary[prop][flag] for prop in properties)}/{len(properties)}")
            lines.append("| " + " | ".join(cells) + " |")
        if all(r.disagreement is not None for r in self.results.values()):
            cells = ["view disagreement A/B (↓)"] + [f"{np.mean(list(self.results[n].disagreement.values())):.3f}" for n in named]
            cells += [spread([np.mean(list(r.disagreement.values())) for r in seeds]) for seeds in groups.values()]
            cells += [""] * (len(header) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def wins(self, flag: str = "beats_random") -> dict[str, int]:
        """Properties won per family (and "all") by the checkpoint: `flag` is "beats_random" (the target) or
        "beats_random_encoder"."""
        summary = self.summary()
        counts = {family: sum(summary[prop].get(flag, False) for prop in props) for family, props in FAMILIES.items()}
        return {**counts, "all": sum(counts.values())}

    def to_json(self) -> dict:
        return {
            "num_train_rooms": self.num_train,
            "num_test_rooms": self.num_test,
            "properties": {family: list(props) for family, props in FAMILIES.items()},
            "results": {n: {"r2": r.r2, "mean_r2": r.mean_r2, "disagreement": r.disagreement} for n, r in self.results.items()},
            "summary": self.summary(),
        }


def compare(
    checkpoint, test_rooms: list[Path], train_rooms: list[Path] | None = None, num_views: int = 4,
    width: int | None = None, random_seeds=(0, 1, 2), pooling: str = "flatten", progress: bool = True,
) -> Comparison:
    """Probe a Spa3R checkpoint against random inits of its architecture and the thumbnail baseline."""
    from .inference import load_spa3r_encoder

    encoder, size = load_spa3r_encoder(str(checkpoint), device="cpu")
    width = width or size
    test = load_rooms(test_rooms, num_views, width, ("main", "A", "B"), progress)
    train = load_rooms(train_rooms, num_views, width, ("main",), progress) if train_rooms else None
    results = {"checkpoint": probe_encoder(encoder, train, test, pooling)}
    for name, baseline in baseline_encoders(checkpoint, encoder, random_seeds, progress):
        results[name] = probe_encoder(baseline, train, test, pooling)
    results["thumbnails"] = probe_thumbnails(train, test)
    return Comparison(results, 0 if train is None else len(train.rooms), len(test.rooms))


# ---------------------------------------------------------------------------------------------------------------------
# a SynthVSI task answered from the latent by a linear probe
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RoomSizeReadout:
    """SynthVSI's Room Size answered by a ridge probe on each representation: the VSI-Bench MRA (fraction in [0, 1])
    over the questions; the checkpoint's score with a seeded 95 % bootstrap interval over the questions."""

    n: int
    num_train: int  # rooms the probes are fitted on
    scores: dict[str, float]  # "checkpoint", "<group> (seed S)", "thumbnails"
    interval: tuple[float, float]

    def groups(self) -> dict[str, list[float]]:
        """Seed scores per random-baseline group."""
        return seed_groups(self.scores)

    def lines(self) -> list[str]:
        low, high = self.interval
        lines = [f"checkpoint: {100 * self.scores['checkpoint']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"]
        for group, values in self.groups().items():
            lines.append(f"{group}: {100 * np.mean(values):.1f} ± {100 * np.std(values):.1f} ({len(values)} seeds)")
        lines.append(f"thumbnails: {100 * self.scores['thumbnails']:.1f}")
        return lines

    def to_json(self) -> dict:
        return {"n": self.n, "num_train": self.num_train, "scores": self.scores, "interval": list(self.interval),
                "groups": self.groups()}


def room_size_scores(train_x: np.ndarray, train_area: np.ndarray, test_x: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Per question: the MRA of a ridge probe of floor area (fitted on the train rooms) against the answer."""
    from .vsibench import mean_relative_accuracy

    predictions = RidgeProbe().fit(train_x, train_area[:, None]).predict(test_x)[:, 0]
    return np.array([mean_relative_accuracy(float(p), float(t)) for p, t in zip(predictions, truths)])


def readout_room_size(
    checkpoint, train_rooms: list[Path], questions: list[dict], rooms_root: Path, num_views: int = 4,
    width: int | None = None, random_seeds=(0, 1, 2), pooling: str = "flatten", seed: int = 0, progress: bool = True,
) -> RoomSizeReadout:
    """
    Answer SynthVSI room-size `questions` (records with `scene_name` and `ground_truth`; their rooms are
    `rooms_root/<scene_name>`) from the pooled latent of `num_views` spread views: a ridge probe of floor area fitted
    on `train_rooms`, scored like a VLM (MRA). The same for the random baselines of `compare` and the thumbnails:
    whether the latent holds what a VLM on top of it is asked, apart from whether the VLM learns to read it.
    """
    from .inference import load_spa3r_encoder

    if not questions:
        raise ValueError("no room-size questions to read out")
    encoder, size = load_spa3r_encoder(str(checkpoint), device="cpu")
    width = width or size
    train = load_rooms(train_rooms, num_views, width, ("main",), progress)
    test = load_rooms([Path(rooms_root) / q["scene_name"] for q in questions], num_views, width, ("main",), progress)
    area = train.targets[:, PROPERTIES.index("floor_area")]
    truths = np.array([float(q["ground_truth"]) for q in questions])

    def scores(features) -> np.ndarray:
        return room_size_scores(features(train.views["main"]), area, features(test.views["main"]), truths)

    per_question = scores(lambda views: encode_views(encoder, views, pooling))
    results = {"checkpoint": float(per_question.mean())}
    for name, baseline in baseline_encoders(checkpoint, encoder, random_seeds, progress):
        results[name] = float(scores(lambda views: encode_views(baseline, views, pooling)).mean())
    results["thumbnails"] = float(scores(lambda views: np.stack([thumbnails(v) for v in views])).mean())
    resampled = np.random.default_rng(seed).integers(0, len(per_question), (1000, len(per_question)))
    low, high = np.quantile(per_question[resampled].mean(1), [0.025, 0.975])
    return RoomSizeReadout(len(questions), len(train_rooms), results, (float(low), float(high)))


# ---------------------------------------------------------------------------------------------------------------------
# latent usage: does the decoder need this room's latent?
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LatentUsage:
    """Mean representation loss (geo and sem smooth-L1 + cosine) per view group ("context", "target") over rooms,
    each room decoded with its own latent, with the rooms' mean latent, and with the next room's latent."""

    own: dict[str, float]
    mean: dict[str, float]
    other: dict[str, float]
    num_rooms: int
    num_views: int
    num_context: int

    def gain(self, group: str) -> float:
        """1 − own / mean-latent loss: the share of the loss the room's own latent removes (0 = the latent is unused)."""
        return 1.0 - self.own[group] / self.mean[group]

    def lines(self) -> str:
        rows = [f"latent usage on {self.num_rooms} held-out rooms ({self.num_views} spread views, first "
                f"{self.num_context} context): representation loss decoded with"]  # fmt: skip
        for group in ("context", "target"):
            rows.append(
                f"  {group} views: own latent {self.own[group]:.4f}, mean latent {self.mean[group]:.4f}, another "
                f"room's {self.other[group]:.4f} -> the own latent removes {100 * self.gain(group):.1f} % of the loss"
            )
        return "\n".join(rows)

    def to_json(self) -> dict:
        return {"own": self.own, "mean": self.mean, "other": self.other, "gain": {g: self.gain(g) for g in self.own},
                "num_rooms": self.num_rooms, "num_views": self.num_views, "num_context": self.num_context}  # fmt: skip


@torch.inference_mode()
def latent_usage(
    checkpoint, rooms: list[Path], num_views: int = 6, num_context: int = 3, width: int | None = None, progress: bool = True
) -> LatentUsage:
    """
    Decode each room's views (`num_views` spread along its trajectory, the first `num_context` of them context) from
    its own latent, the mean latent of the rooms, and the next room's latent. Needs a `Spa3RForPretraining`
    checkpoint pretrained against rendered targets (`spa3r pretrain --targets rendered`) and rooms with the
    rendered maps and poses (synthetic rooms).
    """
    from .data.datasets import MultiViewDataset
    from .modeling_spa3r import Spa3RForPretraining, smooth_l1_and_cosine
    from .training.pretrain import PretrainingCollator

    model = Spa3RForPretraining.from_pretrained(str(checkpoint)).eval()
    if model.config.pretraining_targets != "rendered":
        raise ValueError(
            f"latent usage needs a checkpoint pretrained against rendered targets; {checkpoint} records "
            f"pretraining_targets={model.config.pretraining_targets!r}"
        )
    if not 1 <= num_context < num_views:
        raise ValueError(f"num_context must be in [1, num_views), got {num_context} of {num_views}")
    dataset = MultiViewDataset(rooms, views=(num_views, num_views), width=width or model.config.view_width,
                               seed=0, sampling="spread")  # fmt: skip
    collate = PretrainingCollator(model.config.vggt_config.patch_size, "rendered", "ground_truth", model.config.semantic_size)
    view_mask = torch.arange(num_views) >= num_context  # (V,) True = target
    batches, outputs = [], []
    for index in tqdm(range(len(rooms)), desc="latent usage", unit="room", disable=not progress):
        sample = dataset[index]
        sample["view_mask"] = view_mask
        batches.append(collate([sample]))
        outputs.append(model(**batches[-1]))
    mean_latent = torch.cat([out.latents for out in outputs]).mean(0, keepdim=True)  # (1, Q, D)

    def predictions(out, batch, latents) -> tuple[torch.Tensor, torch.Tensor]:
        """geo and sem fields (1, V, Np, C) decoded from `latents` with the room's cameras."""
        image_size_hw = tuple(batch["pixel_values"].shape[-2:])
        grid_hw = tuple(size // model.config.vggt_config.patch_size for size in image_size_hw)
        decoded, _ = model.decode(latents, out.extrinsics, out.intrinsics, image_size_hw, grid_hw)  # (1, V, Np, D)
        return model.heads["geo"](decoded), model.heads["sem"](decoded)

    groups = {"context": ~view_mask, "target": view_mask}
    totals = {name: {"context": 0.0, "target": 0.0} for name in ("own", "mean", "other")}
    for index, (out, batch) in enumerate(zip(outputs, batches)):
        fields = {"own": (out.pred_geo, out.pred_sem),  # the forward already decoded the room's own latent
                  "mean": predictions(out, batch, mean_latent),
                  "other": predictions(out, batch, outputs[(index + 1) % len(outputs)].latents)}  # fmt: skip
        for name, (pred_geo, pred_sem) in fields.items():
            for group, views in groups.items():
                value = sum(smooth_l1_and_cosine(pred_geo[:, views], out.target_geo[:, views])) + sum(
                    smooth_l1_and_cosine(pred_sem[:, views], out.target_sem[:, views])
                )
                totals[name][group] += float(value) / len(rooms)
    return LatentUsage(**totals, num_rooms=len(rooms), num_views=num_views, num_context=num_context)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spa3r probe",
        description=(
            "Linear (ridge) probes of room properties and of the room's layout in the first view's frame (from "
            "scene.json) from a Spa3R checkpoint's latents, "
            "against the same architecture at random initialisation and an 8x6-thumbnail baseline."
        ),
    )
    parser.add_argument("checkpoint", help="Spa3R checkpoint directory (Spa3RModel or Spa3RForPretraining)")
    parser.add_argument("--rooms", required=True, help="held-out rooms: scene folders with scene.json")
    parser.add_argument("--train_rooms", help="rooms to fit the probes on (default: 5-fold cross-fitting on --rooms)")
    parser.add_argument("--views", type=int, default=4, help="views per room, spread along the trajectory (default 4)")
    parser.add_argument("--width", type=int, help="view width (default: the width the checkpoint was pretrained at, else its image size)")
    parser.add_argument("--pooling", choices=("flatten", "mean"), default="flatten", help="latent → room vector")
    parser.add_argument("--random_seeds", type=int, nargs="*", default=[0, 1, 2], help="random-init baselines")
    parser.add_argument("--latent_usage", action="store_true",
                        help="also decode the held-out rooms from their own / the mean / another room's latent "
                             "(a pretraining checkpoint with rendered targets; synthetic rooms)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.views < 1:
            raise ValueError(f"--views must be at least 1, got {args.views}")
        comparison = compare(
            args.checkpoint, find_rooms(args.rooms), find_rooms(args.train_rooms) if args.train_rooms else None,
            args.views, args.width, args.random_seeds, args.pooling,
        )  # fmt: skip
        usage = latent_usage(args.checkpoint, find_rooms(args.rooms), width=args.width) if args.latent_usage else None
    except (ValueError, OSError) as error:
        print(f"spa3r probe: error: {error}", file=sys.stderr)
        return 2
    where = f"{comparison.num_train} train rooms" if comparison.num_train else "5-fold cross-fitting"
    print(f"held-out R² on {comparison.num_test} rooms ({where}), {args.views} views, {args.pooling} pooling:")
    print(comparison.table())
    if usage is not None:
        print(usage.lines())
    if args.json:
        results = {**comparison.to_json(), **({"latent_usage": usage.to_json()} if usage is not None else {})}
        args.json.write_text(json.dumps(results, indent=2))
    return 0


__all__ = [
    "FAMILIES", "LAYOUT_PROPERTIES", "PROPERTIES", "ROOM_PROPERTIES", "LatentUsage", "RidgeProbe", "compare",
    "latent_usage", "room_layout", "room_properties", "spread_frames",
]
