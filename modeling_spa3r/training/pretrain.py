"""PSFM pretraining of Spa3R on `transformers.Trainer`.

    python training/pretrain.py --preset spa3r-synthetic-tiny --train_data synthetic:data/synth --output_dir runs/tiny
    accelerate launch --config_file configuration/accelerate/8gpu_zero2.yaml training/pretrain.py --preset spa3r-base ...

Data: scene folders (ScanNet, ScanNet++, synthetic; weighted mixtures) through `MultiViewDataset`; every batch holds
one view count V drawn by `ViewBudgetBatchSampler` (≈ `images_per_device` images), aligned by `collate_views`.
The view split is part of the data (seeded by epoch and sample), so a resumed run sees the same batches and splits.
Targets and cameras come from the frozen teachers, or (`targets: rendered`, `cameras: ground_truth`) from the
rendered depth / normals / semantic maps and the poses of the scene folders (the model re-expresses poses relative
to the first context view, VGGT's convention; see `Spa3RForPretraining`).
Held-out loss: `--eval_data KIND:PATH` or `--eval_fraction F` (the last F of each train root's scenes, taken out of
training); every held-out room gives one sample of `eval_views` views with a fixed frame choice and view split, so
the `eval_*` terms of successive evaluations (`--eval_strategy steps --eval_steps N`) are comparable.
Logged next to `loss` and the terms: `representation_loss` (what trains the encoder/decoder) and `probe_loss` (the
detached probes).
Teacher cache: `--teacher_cache DIR` (written by `spa3r cache-teachers` with the same arguments) gives the symmetric
step its teachers' targets and cameras, so only the context views are aggregated (see `teacher_cache`).
"""

import logging
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy

from ..configuration_spa3r import Spa3RConfig
from ..data.datasets import PRESETS, SAMPLINGS, MultiViewDataset, ViewBudgetBatchSampler, collate_views, find_scenes
from ..modeling_spa3r import Spa3RForPretraining, sample_view_mask
from .checkpoints import train_resumable
from .model_card import write_training_card
from .presets import parse_arguments
from .teacher_cache import SAMPLE_KEY, CachedTeacherDataset, collate_cached_targets, open_for_training

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Spa3RForPretraining checkpoint to start from (else a fresh model)"}
    )
    config_name: str | None = field(default=None, metadata={"help": "Spa3R config JSON of a fresh model"})
    teachers_path: str | None = field(
        default=None,
        metadata={"help": "checkpoint holding the frozen teachers (VGGT heads, DINOv3); loaded at every start"},
    )
    asymmetric_masking: bool | None = field(default=None, metadata={"help": "override config.asymmetric_masking"})
    mask_ratio: float | None = field(default=None, metadata={"help": "override config.mask_ratio"})
    loss_views: Literal["all", "target"] | None = field(
        default=None, metadata={"help": "override config.loss_views: losses on all views or the target views only"}
    )
    teacher_dtype: Literal["float32", "bfloat16"] | None = field(
        default=None, metadata={"help": "override config.teacher_dtype: frozen teachers in bf16, student stays fp32"}
    )
    sampled_depth_target: bool | None = field(
        default=None, metadata={"help": "override config.sampled_depth_target: depth teacher only where sampled"}
    )
    backbone_supervision_weight: float | None = field(
        default=None,
        metadata={"help": "override config.backbone_supervision_weight: per-view geometry loss on a trained "
                  "aggregator's context features (needs --targets rendered and train_backbone=true; 0 = off)"},
    )


@dataclass
class DataArguments:
    train_data: list[str] = field(
        default_factory=list, metadata={"help": "KIND:PATH scene roots, KIND in scannet/scannetpp/synthetic"}
    )
    train_data_weights: list[float] | None = field(
        default=None, metadata={"help": "share of each train_data entry in an epoch (default: by size)"}
    )
    eval_data: list[str] | None = field(default=None, metadata={"help": "KIND:PATH scene roots for evaluation"})
    eval_fraction: float = field(
        default=0.0, metadata={"help": "hold out this fraction of each train_data root's scenes for evaluation"}
    )
    eval_views: int | None = field(default=None, metadata={"help": "views per held-out sample (default: max views)"})
    sampling: str = field(
        default="stride", metadata={"help": "frames of a sample: 'stride' (consecutive) or 'spread' (whole trajectory)"}
    )
    views: list[int] = field(default_factory=lambda: [4, 12], metadata={"help": "min and max views per sample"})
    images_per_device: int = field(default=24, metadata={"help": "image budget of a batch (B = budget // V)"})
    image_width: int = field(default=518, metadata={"help": "views are resized to this width, cropped to 14s"})
    samples_per_scene: int = field(default=1, metadata={"help": "samples drawn per scene and epoch"})
    samples_per_epoch: int | None = field(default=None, metadata={"help": "epoch length of a mixture"})
    targets: Literal["teachers", "rendered"] = field(
        default="teachers", metadata={"help": "teacher features, or rendered normals+depth / semantic classes"}
    )
    cameras: Literal["teacher", "ground_truth"] = field(
        default="teacher", metadata={"help": "cameras from VGGT's camera head or from the scene folders' poses"}
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={"help": "folder of `spa3r cache-teachers` (same arguments): the symmetric step reads the teachers' "
                  "targets and cameras from it instead of running the full teacher pass"},
    )


def parse_data_spec(spec: str) -> tuple[str, str]:
    """`KIND:PATH` → (kind, path)."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in PRESETS or not path:
        raise ValueError(f"data entry {spec!r} must be KIND:PATH with KIND one of {sorted(PRESETS)}")
    return kind, path


class SceneMixture(Dataset):
    """
    Weighted mixture of `MultiViewDataset`s: the epoch is cut into contiguous index blocks proportional to the
    weights (the batch sampler shuffles them); items are `(index, V)` as for `MultiViewDataset`. Every sample also
    carries its view split `view_mask` (V,), a pure function of (seed, epoch, index).
    """

    def __init__(self, datasets: list[MultiViewDataset], weights=None, length=None, mask_ratio=0.5, seed=0):
        sizes = [len(d) for d in datasets]
        weights = np.asarray(weights if weights is not None else sizes, dtype=np.float64)
        if len(weights) != len(datasets) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"need one non-negative weight per dataset ({len(datasets)}), got {weights.tolist()}")
        self.datasets, self.length = datasets, int(length or sum(sizes))
        self.bounds = np.round(np.cumsum(weights) / weights.sum() * self.length).astype(int)
        self.mask_ratio, self.seed, self.epoch = mask_ratio, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item) -> dict:
        index, num_views = item if isinstance(item, tuple) else (item, None)
        which = int(np.searchsorted(self.bounds, index, side="right"))
        start = self.bounds[which - 1] if which else 0
        dataset = self.datasets[which]
        sample = dataset[(int(index - start) % len(dataset), num_views)]
        seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        sample["view_mask"] = sample_view_mask(1, sample["pixel_values"].shape[0], self.mask_ratio, generator)[0]
        return sample


class EpochBatchSampler(ViewBudgetBatchSampler):
    """`ViewBudgetBatchSampler` that follows the dataset's epoch (resumed runs set it through the dataset)."""

    def __init__(self, dataset, **kwargs):
        super().__init__(len(dataset), **kwargs)
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        self.epoch = self.dataset.epoch
        return super().__iter__()


def _patch_mean(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, V, C, H, W) → patch means (B, V, h·w, C)."""
    batch, views = maps.shape[:2]
    pooled = F.avg_pool2d(maps.flatten(0, 1).float(), patch)  # (B·V, C, h, w)
    return pooled.flatten(2).transpose(1, 2).reshape(batch, views, -1, maps.shape[2])


class PretrainingCollator:
    """Samples → model inputs: pixels, view split, and targets / cameras from the batch when configured."""

    def __init__(self, patch_size: int, targets: str = "teachers", cameras: str = "teacher", num_classes: int = 0):
        self.patch_size, self.targets, self.cameras, self.num_classes = patch_size, targets, cameras, num_classes

    def __call__(self, samples: list[dict]) -> dict:
        batch = collate_views(samples)
        inputs = {"pixel_values": batch["pixel_values"], "view_mask": torch.stack([s["view_mask"] for s in samples])}
        if self.cameras == "ground_truth":
            inputs["extrinsics"], inputs["intrinsics"] = batch["extrinsics"], batch["intrinsics"]
        if self.targets == "rendered":
            inputs.update(self.rendered_targets(batch))
        if SAMPLE_KEY in samples[0]:
            inputs.update(collate_cached_targets(samples))
        return inputs

    def rendered_targets(self, batch: dict) -> dict:
        """geometry = patch-mean normals (3) ‖ depth (1); semantic = class histogram; depth = valid-pixel mean."""
        missing = [key for key in ("depth", "normals", "semantic") if key not in batch]
        if missing:
            raise ValueError(
                f"targets='rendered' needs depth/, normal/ and semantic/ maps in every scene folder (synthetic "
                f"scenes); these batches lack {missing}: {batch['scene']}. Use targets='teachers' instead."
            )
        patch = self.patch_size
        depth = batch["depth"][:, :, None]  # (B, V, 1, H, W)
        valid = _patch_mean((depth > 0).float(), patch)
        depth = _patch_mean(depth, patch) / valid.clamp_min(1e-6)  # (B, V, Np, 1)
        normals = F.normalize(_patch_mean(batch["normals"], patch), dim=-1)  # (B, V, Np, 3)
        semantic = batch["semantic"]
        if int(semantic.max()) >= self.num_classes:
            raise ValueError(
                f"semantic class {int(semantic.max())} in {batch['scene']} exceeds the model's semantic_size "
                f"{self.num_classes}"
            )
        one_hot = F.one_hot(semantic, self.num_classes).permute(0, 1, 4, 2, 3)  # (B, V, K, H, W)
        return {
            "geometry_targets": torch.cat((normals, depth), dim=-1),
            "depth_targets": depth,
            "semantic_targets": _patch_mean(one_hot, patch),
        }


class Spa3RTrainer(Trainer):
    """
    `Trainer` for `Spa3RForPretraining`: batches from the views-per-sample batch sampler (sharded across processes
    by accelerate), and every loss term logged by name (`geo/l1`, ..., `eval_geo/l1`, ...) next to `loss`.
    """

    loss_is_scaled_for_ga = False  # the model returns a per-batch mean: let the Trainer divide by accumulation

    def __init__(self, *args, views=(4, 12), images_per_device: int = 24, eval_views: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.views, self.images_per_device = tuple(views), images_per_device
        self.eval_views = eval_views or self.views[1]
        self._loss_terms = {"train": defaultdict(list), "eval": defaultdict(list)}

    def _view_loader(self, dataset, shuffle: bool) -> DataLoader:
        sampler = EpochBatchSampler(
            dataset,
            views=self.views if shuffle else (self.eval_views, self.eval_views),
            images_per_batch=self.images_per_device,
            shuffle=shuffle,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            drop_last=self.args.dataloader_drop_last,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
        )
        return self.accelerator.prepare(loader)

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Spa3RTrainer needs a train_dataset")
        return self._view_loader(self.train_dataset, shuffle=True)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Spa3RTrainer needs an eval_dataset to evaluate")
        return self._view_loader(dataset, shuffle=False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        terms = self._loss_terms["train" if model.training else "eval"]
        logged = {**outputs.losses, "representation_loss": outputs.representation_loss, "probe_loss": outputs.probe_loss}
        for name, value in logged.items():
            terms[name].append(value.detach().float())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        terms = self._loss_terms[split]
        if terms and (split == "eval" or "loss" in logs):
            names = sorted(terms)
            means = torch.stack([torch.stack(terms[name]).mean() for name in names])
            if dist.is_available() and dist.is_initialized():  # average over processes (every rank logs together)
                means = means.to(self.args.device)
                dist.all_reduce(means)
                means /= dist.get_world_size()
            prefix = "eval_" if split == "eval" else ""
            logs.update({f"{prefix}{name}": round(value, 6) for name, value in zip(names, means.tolist())})
            terms.clear()
        super().log(logs, start_time)


def build_datasets(data: DataArguments, mask_ratio: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Train (and eval) mixtures from the `KIND:PATH` entries."""
    if not data.train_data:
        raise ValueError("no training data: pass --train_data KIND:PATH (e.g. synthetic:data/synth)")
    if len(data.views) != 2 or not 2 <= data.views[0] <= data.views[1]:
        raise ValueError(f"views must be two numbers MIN MAX with 2 <= MIN <= MAX, got {data.views}")
    if data.sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {data.sampling!r}")
    if not 0.0 <= data.eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {data.eval_fraction}")
    if data.eval_fraction and data.eval_data:
        raise ValueError("pass either --eval_data or --eval_fraction, not both")
    eval_views = data.eval_views or data.views[1]
    if eval_views < 2:
        raise ValueError(f"eval_views must be at least 2, got {eval_views}")

    def dataset(scenes, kind, views, samples_per_scene):
        return MultiViewDataset(
            scenes, views=views, stride=kind, width=data.image_width, samples_per_scene=samples_per_scene, seed=seed,
            sampling=data.sampling,
        )  # fmt: skip

    train_sets, eval_sets = [], []
    for spec in data.train_data:
        kind, path = parse_data_spec(spec)
        scenes = path
        if data.eval_fraction:
            scenes = find_scenes(path)
            num_eval = max(1, round(len(scenes) * data.eval_fraction))
            if num_eval >= len(scenes):
                raise ValueError(f"eval_fraction {data.eval_fraction} leaves no training scene of the {len(scenes)} in {path}")
            scenes, held_out = scenes[:-num_eval], scenes[-num_eval:]
            eval_sets.append(dataset(held_out, kind, (eval_views, eval_views), 1))
        train_sets.append(dataset(scenes, kind, tuple(data.views), data.samples_per_scene))
    for spec in data.eval_data or []:
        kind, path = parse_data_spec(spec)
        eval_sets.append(dataset(path, kind, (eval_views, eval_views), 1))
    train = SceneMixture(train_sets, data.train_data_weights, data.samples_per_epoch, mask_ratio=mask_ratio, seed=seed)
    evaluation = SceneMixture(eval_sets, None, None, mask_ratio=mask_ratio, seed=seed) if eval_sets else None
    return train, evaluation


def build_model(model_args: ModelArguments) -> Spa3RForPretraining:
    """A fresh or loaded `Spa3RForPretraining`; teachers are (re)loaded from `teachers_path` when given."""
    overrides = {
        key: value
        for key, value in (
            ("asymmetric_masking", model_args.asymmetric_masking),
            ("mask_ratio", model_args.mask_ratio),
            ("loss_views", model_args.loss_views),
            ("teacher_dtype", model_args.teacher_dtype),
            ("sampled_depth_target", model_args.sampled_depth_target),
            ("backbone_supervision_weight", model_args.backbone_supervision_weight),
        )
        if value is not None
    }
    if model_args.model_name_or_path:
        model = Spa3RForPretraining.from_pretrained(model_args.model_name_or_path, **overrides)
    else:
        config = Spa3RConfig.from_json_file(model_args.config_name) if model_args.config_name else Spa3RConfig()
        for key, value in overrides.items():
            setattr(config, key, value)
        model = Spa3RForPretraining(config)
    if model_args.teachers_path:
        logger.info("teachers %s loaded from %s", model.load_teachers(model_args.teachers_path), model_args.teachers_path)
    return model


def check_teachers_needed(model: Spa3RForPretraining, model_args: ModelArguments, data: DataArguments) -> None:
    """Refuse to train against randomly initialised teachers, or to supervise a backbone without rendered targets."""
    uses_teachers = data.targets == "teachers" or data.cameras == "teacher" or not model.config.train_backbone
    if uses_teachers and not (model_args.teachers_path or model_args.model_name_or_path):
        raise ValueError(
            "this setup uses the frozen teachers (aggregator / camera head / depth head / DINOv3) but none were "
            "loaded: pass --teachers_path (or --model_name_or_path of a checkpoint saved with its teachers), or "
            "use --targets rendered --cameras ground_truth with a config that has train_backbone=true"
        )
    weight = model.config.backbone_supervision_weight
    if weight and (data.targets != "rendered" or not model.config.train_backbone):
        raise ValueError(
            f"backbone_supervision_weight={weight} trains the aggregator on the rendered normals and depth of its "
            f"views: it needs --targets rendered (got {data.targets!r}) and a config with train_backbone=true (got "
            f"{model.config.train_backbone})"
        )
    if data.targets == "rendered" and model.config.semantic_teacher_config is not None:
        logger.warning("targets='rendered': the semantic teacher is configured but not used")


def main(argv: list[str] | None = None) -> dict:
    """Run pretraining; returns the training metrics."""
    model_args, data_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, TrainingArguments), argv, "PSFM pretraining of Spa3R."
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level())
    set_seed(training_args.seed)  # fresh weights are the same in every run (and every process)
    model = build_model(model_args)
    check_teachers_needed(model, model_args, data_args)
    model.config.pretraining_targets = data_args.targets  # visualize / the app build the same targets
    model.config.pretraining_image_width = data_args.image_width  # ... at the same view width
    seed = training_args.data_seed or training_args.seed
    train, evaluation = build_datasets(data_args, model.config.mask_ratio, seed)
    if data_args.teacher_cache:
        train = CachedTeacherDataset(train, open_for_training(data_args.teacher_cache, model, data_args, training_args, seed))
    if evaluation is None and training_args.eval_strategy != IntervalStrategy.NO:
        logger.info("no held-out rooms (--eval_fraction 0, no --eval_data): held-out evaluation is off")
        training_args.eval_strategy = IntervalStrategy.NO
    collator = PretrainingCollator(
        model.config.vggt_config.patch_size, data_args.targets, data_args.cameras, model.config.semantic_size
    )
    trainer = Spa3RTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collator,
        views=data_args.views,
        images_per_device=data_args.images_per_device,
        eval_views=data_args.eval_views,
    )
    result = train_resumable(trainer, training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if evaluation is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    write_training_card(trainer, data={"train_data": data_args.train_data, "eval_data": data_args.eval_data, "targets": data_args.targets})
    # Gloo's threads may outlive an undestroyed process group and abort the interpreter at exit (SIGABRT after a
    # finished multi-process run); accelerate's end of training destroys it (a no-op in a single process).
    trainer.accelerator.end_training()
    return {**result.metrics, "steps": trainer.state.global_step, "final_loss": _last_loss(trainer.state.log_history)}


def _last_loss(history: list[dict]) -> float:
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return losses[-1] if losses else math.nan


if __name__ == "__main__":
    main(sys.argv[1:])
