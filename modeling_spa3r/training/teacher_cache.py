"""Teacher cache: the frozen teachers' full pass of the symmetric step, computed once per fixed view set.

In symmetric mode (`asymmetric_masking=False`, the released training configuration) the teachers run over all V
views of a sample whatever its context/target split, yet the step recomputes them for every sample of every epoch.
`spa3r cache-teachers` runs that pass once and stores what the step needs; `spa3r pretrain --teacher_cache DIR`
then aggregates only the context views (`Spa3RForPretraining.forward` skips the full pass when geometry, depth and
semantic targets and cameras are given).

    spa3r cache-teachers <the arguments of the pretrain run> --teacher_cache DIR
    spa3r pretrain <the same arguments> --teacher_cache DIR

Which view sets: `cache-teachers` builds the training mixture of that pretrain run (`build_datasets`, same
`--train_data`, `--views`, `--image_width`, `--sampling`, `--samples_per_scene`, seed, ...) and caches, for every
sample index of an epoch and every view count V in `--views MIN MAX`, the frames epoch 0 draws for (index, V). The
batch sampler still draws V per batch and the view split still changes per epoch (a pure function of seed, epoch
and index); only the frames of a sample stay those of epoch 0 in every epoch. `--views 8 8` caches one view count.

Stored per entry (float32, exactly as the step computes them, under the run's `--bf16`/`--fp16` autocast):
geometry targets (V, Np, A) = the aggregator's last-layer patch features, depth (V, Np, 1) at patch resolution
(`depth_target`, honouring `sampled_depth_target`), semantic targets (V, Np, Cs) from DINOv3, and the camera head's
extrinsics (V, 3, 4) / intrinsics (V, 3, 3). The camera head's frame is view 0's, which `sample_view_mask` always
makes a context view, so the cached cameras are the uncached step's for any split (`canonical_cameras=True`).
Size: about V·Np·(A + Cs + 1)·4 bytes per entry, ≈ 12.7 MB per view for VGGT-1B + DINOv3-L at 518×392.

Format: sharded safetensors (`shard-NNNNN.safetensors`, `--cache_shard_entries` entries each) and `manifest.json`.
Chosen over a `datasets` Arrow dataset because entries are dense tensors of varying V read at random by
(index, V): safetensors reads one entry's tensors from a memory map without decoding rows, and one file per shard
makes writes atomic (temporary name, fsync, `os.replace`) and resuming a matter of skipping finished shards. A shard
killed mid-write only ever exists under its temporary name; the manifest (rewritten atomically after every shard)
lists finished shards with their byte sizes, so a truncated one is named before training starts.

The manifest ties the cache to the teachers (`teacher_digest`: SHA-256 over the frozen teachers' state-dict
tensors: aggregator, camera head, depth head, DINOv3), to the settings that change the targets (the VGGT and DINOv3
configs, `semantic_image_size`, `teacher_dtype`, `sampled_depth_target`, mixed precision) and to the data (the
mixture's arguments, and the scene and frame indices of every entry, checked again as each sample is loaded).
"""

import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..modeling_spa3r import Spa3RForPretraining
from ..validation import DataError
from .checkpoints import write_atomically

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "spa3r-teacher-cache"
VERSION = 1
#: What the cache serves per entry, by the names `Spa3RForPretraining.forward` takes.
CACHED_KEYS = ("geometry_targets", "depth_targets", "semantic_targets", "extrinsics", "intrinsics")
#: The sample key under which `CachedTeacherDataset` hands a sample's cached tensors to the collator.
SAMPLE_KEY = "teacher_cache"
#: The data arguments that decide which samples (and frames) the training mixture draws.
DATA_FIELDS = ("train_data", "train_data_weights", "samples_per_epoch", "samples_per_scene", "sampling", "views",
               "image_width", "eval_fraction")  # fmt: skip
_CONFIG_NOISE = {"transformers_version", "architectures", "dtype", "torch_dtype"}


@dataclass
class CacheArguments:
    cache_shard_entries: int = field(default=8, metadata={"help": "cache entries (samples) per safetensors shard"})


# ---------------------------------------------------------------------------------------------------------------------
# What a cache is tied to
# ---------------------------------------------------------------------------------------------------------------------


def teacher_digest(model: Spa3RForPretraining) -> str:
    """SHA-256 over the frozen teachers' state-dict tensors (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256()
    state = {
        f"{prefix}.{key}": value for prefix, module in model.teachers().items() for key, value in module.state_dict().items()
    }
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _config_fields(config) -> dict | None:
    if config is None:
        return None
    return {key: value for key, value in config.to_dict().items() if not key.startswith("_") and key not in _CONFIG_NOISE}


def mixed_precision(training_args) -> str:
    return "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no"


def teacher_settings(model: Spa3RForPretraining, training_args) -> dict:
    """The settings besides the weights that change the cached targets (JSON-normalised)."""
    config = model.config
    settings = {
        "vggt_config": _config_fields(config.vggt_config),
        "semantic_teacher_config": _config_fields(config.semantic_teacher_config),
        "semantic_image_size": config.semantic_image_size,
        "teacher_dtype": config.teacher_dtype,
        "sampled_depth_target": config.sampled_depth_target,
        "mixed_precision": mixed_precision(training_args),
    }
    return json.loads(json.dumps(settings))


def data_settings(data_args, seed: int) -> dict:
    """The arguments that decide which samples and frames the training mixture draws (JSON-normalised)."""
    return json.loads(json.dumps({**{name: getattr(data_args, name) for name in DATA_FIELDS}, "seed": seed}))


def first_difference(cached, current, path: str = "") -> str | None:
    """`field: cache X, this run Y` for the first field where two JSON values differ (None when equal)."""
    if isinstance(cached, dict) and isinstance(current, dict):
        for key in sorted(set(cached) | set(current)):
            found = first_difference(cached.get(key), current.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if cached == current else f"{path}: cache {cached!r}, this run {current!r}"


def check_servable(model: Spa3RForPretraining, data_args) -> None:
    """`ValueError` unless this setup is the symmetric step against the frozen teachers (what a cache serves)."""
    if model.config.asymmetric_masking:
        raise ValueError(
            "a teacher cache serves only the symmetric step (asymmetric_masking=False): the asymmetric step's "
            "teacher pass is view-masked, so it depends on each sample's view split; pass --asymmetric_masking false"
        )
    if model.config.train_backbone:
        raise ValueError("a teacher cache needs a frozen aggregator: this config trains it (train_backbone=true)")
    if data_args.targets != "teachers" or data_args.cameras != "teacher":
        raise ValueError(
            f"a teacher cache holds teacher targets and cameras: use --targets teachers --cameras teacher, got "
            f"--targets {data_args.targets} --cameras {data_args.cameras}"
        )
    if model.semantic_teacher is None:
        raise ValueError("a teacher cache needs the semantic teacher (semantic_teacher_config is null in this config)")


# ---------------------------------------------------------------------------------------------------------------------
# The teacher pass
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def teacher_outputs(model: Spa3RForPretraining, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """The symmetric step's full teacher pass over (B, V, 3, H, W) views, as `Spa3RForPretraining.forward` runs it
    → `CACHED_KEYS`: geometry (B, V, Np, A), depth (B, V, Np, 1), semantic (B, V, Np, Cs), extrinsics (B, V, 3, 4),
    intrinsics (B, V, 3, 3)."""
    vggt = model.config.vggt_config
    tokens = model.spa3r.aggregate(pixel_values, keep_layers=set(vggt.dpt_intermediate_layers) | {vggt.num_hidden_layers - 1})
    fields = model.teacher_fields(pixel_values, tokens)
    return {key: fields[key] for key in CACHED_KEYS}


def _autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def entry_key(index: int, num_views: int) -> str:
    return f"{index}_{num_views}"


def shard_problem(path: Path, size: int) -> str | None:
    """Why a finished shard cannot be read (None when its size and safetensors header are intact)."""
    if not path.is_file():
        return f"teacher cache shard {path} is missing"
    if path.stat().st_size != size:
        return f"teacher cache shard {path} has {path.stat().st_size} bytes, {size} when written (truncated or replaced)"
    try:
        with safe_open(str(path), "pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own SafetensorError for a bad header
        return f"teacher cache shard {path} is corrupt ({str(error).splitlines()[0]})"
    return None


def read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(path, f"corrupt teacher cache manifest ({error})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        found = f"format {manifest.get('format')!r}, version {manifest.get('version')!r}"
        raise DataError(path, f"not a {FORMAT} v{VERSION} manifest ({found})")
    return manifest


def check_tied(manifest: dict, directory: Path, digest: str, settings: dict, data: dict) -> None:
    """`ValueError` when the cache was made by other teacher weights, settings or data than this run's."""
    if manifest["teacher_digest"] != digest:
        raise ValueError(
            f"teacher cache {directory} was made by other teacher weights: cache teacher_digest "
            f"{manifest['teacher_digest']}, this run's teachers {digest}"
        )
    for what, key, current in (("teacher setting", "teacher_settings", settings), ("data", "data", data)):
        difference = first_difference(manifest[key], current)
        if difference:
            raise ValueError(f"teacher cache {directory} was made with another {what}: {difference}")


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------


def plan_entries(dataset, views) -> list[tuple[int, int]]:
    """Every (sample index, V) of an epoch, V over the inclusive `views` range, in a fixed order."""
    return [(index, num_views) for index in range(len(dataset)) for num_views in range(views[0], views[1] + 1)]


def write_cache(model, dataset, directory, settings: dict, data: dict, shard_entries: int = 8, device=None,
                progress: bool = True) -> dict:  # fmt: skip
    """Run the teacher pass over every planned entry of `dataset` (a `SceneMixture` kept at epoch 0) into
    `directory`; finished, intact shards of an earlier run with the same teachers/settings/data are skipped."""
    if shard_entries < 1:
        raise ValueError(f"cache_shard_entries must be >= 1, got {shard_entries}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    device = torch.device(device or "cpu")
    model = model.to(device).eval()
    digest = teacher_digest(model)
    plan = plan_entries(dataset, data["views"])
    shards = [plan[start : start + shard_entries] for start in range(0, len(plan), shard_entries)]
    manifest = read_manifest(directory)
    if manifest is not None:
        check_tied(manifest, directory, digest, settings, data)
        if manifest["shard_entries"] != shard_entries:
            raise ValueError(
                f"teacher cache {directory} was started with --cache_shard_entries {manifest['shard_entries']}, "
                f"this run {shard_entries}: use the same value to resume it"
            )
    else:
        manifest = {"format": FORMAT, "version": VERSION, "teacher_digest": digest, "teacher_settings": settings,
                    "data": data, "shard_entries": shard_entries, "num_shards": len(shards), "shards": {},
                    "entries": [], "complete": False}  # fmt: skip
    finished = {}
    for name, record in manifest["shards"].items():
        problem = shard_problem(directory / name, record["bytes"])
        if problem:
            logger.warning("%s: computing it again", problem)
        else:
            finished[name] = record
    manifest["shards"] = finished
    manifest["entries"] = [entry for entry in manifest["entries"] if entry["shard"] in finished]
    write_atomically(directory / MANIFEST, json.dumps(manifest).encode())
    done = sum(len(entries) for number, entries in enumerate(shards) if shard_name(number) in finished)
    bar = tqdm(total=len(plan), initial=done, desc="teacher cache", unit="sample", disable=not progress)
    for number, entries in enumerate(shards):
        name = shard_name(number)
        if name in finished:
            continue
        tensors, records = {}, []
        for index, num_views in entries:
            sample = dataset[(index, num_views)]
            pixel_values = sample["pixel_values"][None].to(device)
            with _autocast(device, settings["mixed_precision"]):
                outputs = teacher_outputs(model, pixel_values)
            key = entry_key(index, num_views)
            tensors.update({f"{key}.{what}": value[0].float().cpu().contiguous() for what, value in outputs.items()})
            records.append({"index": index, "views": num_views, "scene": sample["scene"],
                            "frames": sample["frame_indices"].tolist(), "image_size": list(pixel_values.shape[-2:]),
                            "shard": name})  # fmt: skip
            bar.update(1)
        data_bytes = save(tensors, metadata={"teacher_digest": digest})  # one key: the header bytes stay reproducible
        write_atomically(directory / name, data_bytes)
        manifest["shards"][name] = {"bytes": len(data_bytes), "entries": len(records)}
        manifest["entries"].extend(records)
        manifest["complete"] = len(manifest["shards"]) == len(shards)
        write_atomically(directory / MANIFEST, json.dumps(manifest).encode())
    bar.close()
    return manifest


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------


class TeacherCache:
    """A finished cache folder, checked against this run's teachers, settings and data when opened."""

    def __init__(self, directory, model: Spa3RForPretraining, settings: dict, data: dict):
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        if manifest is None:
            raise DataError(self.directory / MANIFEST, "no teacher cache here (no manifest): run spa3r cache-teachers first")
        check_tied(manifest, self.directory, teacher_digest(model), settings, data)
        if not manifest["complete"]:
            raise ValueError(
                f"teacher cache {self.directory} is incomplete ({len(manifest['shards'])} of {manifest['num_shards']} "
                "shards): run spa3r cache-teachers again with the same arguments to finish it"
            )
        for name, record in manifest["shards"].items():
            problem = shard_problem(self.directory / name, record["bytes"])
            if problem:
                raise DataError(self.directory / name, f"{problem}; run spa3r cache-teachers again to rewrite it")
        self.entries = {(entry["index"], entry["views"]): entry for entry in manifest["entries"]}

    def entry(self, index: int, num_views: int) -> dict:
        entry = self.entries.get((index, num_views))
        if entry is None:
            raise ValueError(f"teacher cache {self.directory} has no entry for sample {index} with {num_views} views")
        return entry

    def load(self, index: int, num_views: int) -> dict[str, torch.Tensor]:
        """The cached tensors of one entry (V, ...)."""
        entry = self.entry(index, num_views)
        path = self.directory / entry["shard"]
        key = entry_key(index, num_views)
        try:
            with safe_open(str(path), "pt") as handle:
                return {name: handle.get_tensor(f"{key}.{name}") for name in CACHED_KEYS}
        except Exception as error:
            raise DataError(path, f"cannot read teacher cache entry {key} ({str(error).splitlines()[0]})") from error


class CachedTeacherDataset(Dataset):
    """A `SceneMixture` whose samples carry their cached teacher tensors (`SAMPLE_KEY`). Images come from the
    scene folders as without a cache; the frames of a sample are those of epoch 0 (the cached view set) in every
    epoch, while the view split follows the epoch."""

    def __init__(self, mixture, cache: TeacherCache):
        self.mixture, self.cache = mixture, cache
        self.mixture.set_epoch(0)

    @property
    def epoch(self) -> int:
        return self.mixture.epoch

    def set_epoch(self, epoch: int) -> None:
        self.mixture.epoch = epoch  # the view split; the scene datasets stay at epoch 0 (the cached frames)

    def __len__(self) -> int:
        return len(self.mixture)

    def __getitem__(self, item) -> dict:
        index, num_views = item if isinstance(item, tuple) else (item, None)
        if num_views is None:
            raise ValueError("a teacher-cached dataset is indexed by (index, V): V must be one of the cached view counts")
        sample = self.mixture[(index, num_views)]
        entry = self.cache.entry(index, num_views)
        found = {
            "scene": sample["scene"],
            "frames": sample["frame_indices"].tolist(),
            "image_size": list(sample["pixel_values"].shape[-2:]),
        }
        expected = {key: entry[key] for key in found}
        if found != expected:
            raise ValueError(
                f"teacher cache entry {entry_key(index, num_views)} of {self.cache.directory} was made for {expected}, "
                f"the data now gives {found}: the scene folders changed since; make the cache again"
            )
        sample[SAMPLE_KEY] = self.cache.load(index, num_views)
        return sample


def collate_cached_targets(samples: list[dict]) -> dict:
    """The cached tensors of a batch (B, V, ...) as forward arguments, cameras marked as the camera head's."""
    sizes = {tuple(sample["pixel_values"].shape[-2:]) for sample in samples}
    if len(sizes) != 1:
        raise ValueError(f"cached teacher targets need every view of a batch at one image size, got {sorted(sizes)}")
    batch = {key: torch.stack([sample[SAMPLE_KEY][key] for sample in samples]) for key in CACHED_KEYS}
    return {**batch, "canonical_cameras": True}


def open_for_training(directory, model, data_args, training_args, seed: int) -> TeacherCache:
    check_servable(model, data_args)
    return TeacherCache(directory, model, teacher_settings(model, training_args), data_settings(data_args, seed))


# ---------------------------------------------------------------------------------------------------------------------
# spa3r cache-teachers
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    """`spa3r cache-teachers`: the arguments of a `spa3r pretrain` run, `--teacher_cache DIR` the output folder."""
    from transformers import TrainingArguments

    from .presets import parse_arguments
    from .pretrain import DataArguments, ModelArguments, build_datasets, build_model, check_teachers_needed

    model_args, data_args, training_args, cache_args = parse_arguments(
        (ModelArguments, DataArguments, TrainingArguments, CacheArguments), argv,
        "Cache the frozen teachers' outputs of the symmetric PSFM step: the arguments of the `spa3r pretrain` run, "
        "--teacher_cache DIR the folder to write.",
    )  # fmt: skip
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not data_args.teacher_cache:
        raise ValueError("pass --teacher_cache DIR: the folder the cache is written to")
    model = build_model(model_args)
    check_teachers_needed(model, model_args, data_args)
    check_servable(model, data_args)
    seed = training_args.data_seed or training_args.seed
    train, _ = build_datasets(data_args, model.config.mask_ratio, seed)
    use_cuda = torch.cuda.is_available() and not training_args.use_cpu
    manifest = write_cache(
        model, train, data_args.teacher_cache, teacher_settings(model, training_args), data_settings(data_args, seed),
        cache_args.cache_shard_entries, "cuda" if use_cuda else "cpu", progress=not training_args.disable_tqdm,
    )  # fmt: skip
    logger.info("teacher cache %s: %d entries, %d shards", data_args.teacher_cache, len(manifest["entries"]), len(manifest["shards"]))
    return {"entries": len(manifest["entries"]), "shards": len(manifest["shards"])}


if __name__ == "__main__":
    main(sys.argv[1:])
