"""Spa3-VLM supervised fine-tuning on TRL's `SFTTrainer`.

    python training/sft.py --preset spa3-vlm-sft-cpu --model_name_or_path runs/tiny-vlm \
        --train_file data/synth/sft/synthvsi_train_sft.json --media_root data/synth --output_dir runs/sft
    accelerate launch --config_file configuration/accelerate/8gpu_zero2.yaml training/sft.py --preset spa3-vlm-sft \
        --qwen_model_path Qwen/Qwen2.5-VL-3B-Instruct --spa3r_model_path runs/spa3r-base ...

Data: VSI-590K-style conversation files (JSON list or JSONL; records with `video` (file or frame folder) and/or
`image(s)` relative to `media_root`, and `conversations` of `{"from": "human"|"gpt", "value": ...}` turns with
`<video>` / `<image>` placeholders). Videos become frames (about `fps` per second, `min_frames`..`max_frames`);
every frame is an image for Qwen and a view of the sample's scene for Spa3R. Loss on assistant tokens only.
The backbone (Qwen2.5-VL or Qwen3-VL) is read from the checkpoint's config; both take the same arguments.

Resume: `--resume_from_checkpoint last` (the newest complete checkpoint; interrupted saves are set aside) or a
checkpoint folder; the resumed run reproduces the uninterrupted one (weights, losses, token counts), and a run
that already reached `max_steps` is not trained further (see `training/checkpoints.py`).
"""

import json
import logging
import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from PIL import Image
from transformers import TrainerState
from transformers.trainer import _is_peft_model
from trl import SFTConfig, SFTTrainer

from ..modeling_spa3_vlm import Spa3VLMForConditionalGeneration
from ..modeling_spa3_vlm_qwen3 import Spa3VLMQwen3ForConditionalGeneration
from ..processing_spa3_vlm import Spa3VLMProcessor, load_video_frames
from ..processing_spa3_vlm_qwen3 import Spa3VLMQwen3Processor
from .checkpoints import load_checkpoint_weights, train_resumable
from .model_card import write_training_card
from .presets import parse_arguments

logger = logging.getLogger(__name__)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
PLACEHOLDER = re.compile(r"<video>|<image>")
#: Qwen3-VL backbones (base `qwen3_vl` or Spa3-VLM `spa3_vlm_qwen3` folders); anything else is Qwen2.5-VL.
QWEN3_MODEL_TYPES = ("qwen3_vl", "spa3_vlm_qwen3")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Spa3-VLM checkpoint (ours or official)"})
    qwen_model_path: str | None = field(
        default=None, metadata={"help": "base Qwen2.5-VL or Qwen3-VL directory (with spa3r)"}
    )
    spa3r_model_path: str | None = field(default=None, metadata={"help": "Spa3R directory (with qwen_model_path)"})
    processor_name_or_path: str | None = field(default=None, metadata={"help": "default: the model / Qwen path"})
    train_llm: bool = field(default=True, metadata={"help": "train the language model (and lm_head)"})
    train_adapter: bool = field(default=True, metadata={"help": "train the geometry fusion adapter"})
    adapter_learning_rate: float | None = field(
        default=None,
        metadata={"help": "learning rate of the geometry fusion (default: --learning_rate; the schedule scales both "
                          "alike). A fresh fusion trained at a small language model's rate can become a constant "
                          "that drowns the visual tokens (README, 'What the demo shows')"},
    )  # fmt: skip
    train_vision_tower: bool = field(default=False, metadata={"help": "train Qwen's vision blocks"})
    train_merger: bool = field(default=False, metadata={"help": "train Qwen's patch merger"})
    train_geometry_encoder: bool = field(default=False, metadata={"help": "train Spa3R"})
    use_lora: bool = field(default=False, metadata={"help": "LoRA on the language model (PEFT); adapter in full"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        metadata={"help": "regex of the LoRA-wrapped Linear layers"},
    )


@dataclass
class DataArguments:
    train_file: list[str] = field(default_factory=list, metadata={"help": "VSI-590K-style JSON/JSONL files"})
    eval_file: list[str] | None = field(
        default=None,
        metadata={"help": "conversation files for evaluation (`eval_loss`); NAME=FILE entries make one evaluation set "
                  "per NAME instead (`eval_NAME_loss`), e.g. own=val.json other_scene=val_swapped.json"},
    )  # fmt: skip
    media_root: str | None = field(default=None, metadata={"help": "folder the video/image paths are relative to"})
    fps: float = field(default=0.5, metadata={"help": "frames sampled per second of video (about 1 per 2 s)"})
    min_frames: int = 4
    max_frames: int = 8
    frame_folder_fps: float | None = field(
        default=None, metadata={"help": "frame rate of frame folders (None: max_frames frames uniformly)"}
    )
    max_visual_tokens_per_frame: int = field(default=576, metadata={"help": "caps Qwen's pixels per frame"})
    video_cache_size: int = field(
        default=0,
        metadata={"help": "videos kept decoded in memory per data process (least recently used out; 0: none): "
                  "many questions about one video then decode it once"},
    )  # fmt: skip


def read_records(path: str) -> list[dict]:
    """Records of a JSON list or JSONL file, checked for `conversations`."""
    text = Path(path).read_text()
    try:
        if path.endswith(".jsonl"):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON/JSONL: {error}") from error
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} must hold a non-empty list of conversation records")
    for index, record in enumerate(records):
        turns = record.get("conversations") if isinstance(record, dict) else None
        if not turns or not all(isinstance(t, dict) and t.get("from") in ROLES and "value" in t for t in turns):
            raise ValueError(
                f"{path} record {index}: needs 'conversations', a list of {{'from': human|gpt|system, 'value': ...}}"
            )
        if not any(ROLES[t["from"]] == "assistant" for t in turns):
            raise ValueError(f"{path} record {index}: no assistant ('gpt') turn to learn from")
    return records


class ConversationSamples:
    """VSI-590K-style records → TRL conversational vision samples `{"messages": [...], "images": [...]}`."""

    def __init__(self, files: list[str], media_root: str | None, sampling: dict, video_cache_size: int = 0):
        self.records = [record for path in files for record in read_records(path)]
        self.media_root = Path(media_root) if media_root else None
        self.sampling = sampling
        if video_cache_size < 0:
            raise ValueError(f"video_cache_size must be >= 0 (0: no cache), got {video_cache_size}")
        self.video_cache_size = video_cache_size
        self._decoded: OrderedDict[Path, list[Image.Image]] = OrderedDict()  # frame sampling is deterministic
        for index, record in enumerate(self.records):
            for media in self._media(record):
                if not self._path(media).exists():
                    raise FileNotFoundError(f"record {index} ({record.get('id', '?')}): media {self._path(media)} not found")

    def __len__(self) -> int:
        return len(self.records)

    def dataset(self) -> datasets.Dataset:
        """A `datasets.Dataset` of record indices whose rows decode lazily (frames are read when a row is accessed)."""
        table = datasets.Dataset.from_dict({"record_index": list(range(len(self.records)))})
        table.set_transform(self._decode_rows)
        return table

    def _decode_rows(self, rows: dict) -> dict:
        samples = [self[index] for index in rows["record_index"]]
        return {"messages": [s["messages"] for s in samples], "images": [s["images"] for s in samples]}

    def _path(self, relative: str) -> Path:
        return self.media_root / relative if self.media_root else Path(relative)

    @staticmethod
    def _media(record: dict) -> list[str]:
        images = record.get("images", record.get("image", []))
        images = [images] if isinstance(images, str) else list(images)
        return ([record["video"]] if record.get("video") else []) + images

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        images = record.get("images", record.get("image", []))
        pending = {"<image>": [self._path(p) for p in ([images] if isinstance(images, str) else images)]}
        pending["<video>"] = [self._path(record["video"])] if record.get("video") else []
        frames, messages = [], []
        for turn in record["conversations"]:
            content, last = [], 0
            for match in PLACEHOLDER.finditer(turn["value"]):
                content += _text(turn["value"][last : match.start()])
                last = match.end()
                if not pending[match.group()]:
                    raise ValueError(f"record {index}: more {match.group()} placeholders than media")
                media = pending[match.group()].pop(0)
                loaded = self._frames(media) if match.group() == "<video>" else [Image.open(media).convert("RGB")]
                frames += loaded
                content += [{"type": "image"} for _ in loaded]
            content += _text(turn["value"][last:])
            messages.append({"role": ROLES[turn["from"]], "content": content})
        if any(pending.values()):
            raise ValueError(f"record {index}: media without a <video>/<image> placeholder in the conversation")
        return {"messages": messages, "images": frames}

    def _frames(self, path: Path) -> list[Image.Image]:
        if path in self._decoded:
            self._decoded.move_to_end(path)
            return [frame.copy() for frame in self._decoded[path]]
        frames = self._decode(path)
        if self.video_cache_size > 0:
            self._decoded[path] = frames
            if len(self._decoded) > self.video_cache_size:
                self._decoded.popitem(last=False)
            return [frame.copy() for frame in frames]
        return frames

    def _decode(self, path: Path) -> list[Image.Image]:
        sampling = dict(self.sampling)
        if path.is_dir():
            if sampling.pop("frame_folder_fps") is None:
                sampling.update(fps=None, num_frames=sampling["max_frames"])
            else:
                sampling["video_fps"] = self.sampling["frame_folder_fps"]
        return load_video_frames(str(path), sampling)


def _text(text: str) -> list[dict]:
    text = text.strip("\n")
    return [{"type": "text", "text": text}] if text else []


class ResumableSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose resume restores everything the uninterrupted run had: the weights under the model's own
    key names (Qwen2.5-VL checkpoints are saved in the legacy layout, which `Trainer`'s non-strict
    `load_state_dict` would silently skip) and TRL's running token count; with `adapter_learning_rate`, the
    geometry fusion trains at a rate of its own."""

    def __init__(self, *args, adapter_learning_rate: float | None = None, **kwargs):
        self.adapter_learning_rate = adapter_learning_rate
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer; with `adapter_learning_rate`, the geometry fusion's parameters move into param
        groups of their own at that rate (Trainer has one rate for every trainable parameter; the LR scheduler,
        created after this, scales each group's own rate)."""
        optimizer = super().create_optimizer(model)
        if self.adapter_learning_rate is None:
            return optimizer
        fusion = {id(p) for name, p in (model or self.model).named_parameters() if "geometry_fusion." in name}
        groups = []
        for group in optimizer.param_groups:
            moved = [p for p in group["params"] if id(p) in fusion]
            kept = [p for p in group["params"] if id(p) not in fusion]
            groups += [{**group, "params": kept}] if kept else []
            groups += [{**group, "params": moved, "lr": self.adapter_learning_rate}] if moved else []
        if not any(id(p) in fusion for group in groups for p in group["params"]):
            raise ValueError("--adapter_learning_rate is set but no geometry fusion parameter is trained "
                             "(train_adapter false, or a model without the fusion)")  # fmt: skip
        optimizer.param_groups = groups  # the optimizer holds no state yet: regrouping its parameters is exact
        return optimizer

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        if _is_peft_model(model) or not os.path.isfile(os.path.join(resume_from_checkpoint, "model.safetensors")):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        else:
            load_checkpoint_weights(model, resume_from_checkpoint)
        history = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, "trainer_state.json")).log_history
        tokens = [entry["num_tokens"] for entry in history if "num_tokens" in entry]
        self._total_train_tokens = int(tokens[-1]) if tokens else 0


def is_qwen3(path: str) -> bool:
    """Whether the checkpoint at `path` has a Qwen3-VL backbone (its config.json's model_type)."""
    from transformers import PreTrainedConfig

    return PreTrainedConfig.get_config_dict(path)[0].get("model_type") in QWEN3_MODEL_TYPES


def _model_class(path: str):
    return Spa3VLMQwen3ForConditionalGeneration if is_qwen3(path) else Spa3VLMForConditionalGeneration


def build_model(args: ModelArguments) -> Spa3VLMForConditionalGeneration | Spa3VLMQwen3ForConditionalGeneration:
    """Spa3-VLM on Qwen2.5-VL or Qwen3-VL, chosen by the checkpoint's config."""
    if args.model_name_or_path and (args.qwen_model_path or args.spa3r_model_path):
        raise ValueError("pass either --model_name_or_path or --qwen_model_path with --spa3r_model_path, not both")
    if args.model_name_or_path:
        return _model_class(args.model_name_or_path).from_pretrained(args.model_name_or_path)
    if args.qwen_model_path and args.spa3r_model_path:
        return _model_class(args.qwen_model_path).from_qwen_and_spa3r(args.qwen_model_path, args.spa3r_model_path)
    raise ValueError("no model: pass --model_name_or_path, or --qwen_model_path and --spa3r_model_path")


def set_trainable(model: Spa3VLMForConditionalGeneration, args: ModelArguments) -> dict[str, int]:
    """requires_grad per part; returns trainable parameter counts per part."""
    core = model.model
    parts = {
        "llm": ([core.language_model, model.lm_head], args.train_llm and not args.use_lora),
        "adapter": ([core.geometry_fusion], args.train_adapter),
        "vision_tower": ([core.visual], args.train_vision_tower),
        "merger": ([core.visual.merger, *getattr(core.visual, "deepstack_merger_list", [])], args.train_merger),
        "geometry_encoder": ([core.geometry_encoder], args.train_geometry_encoder),
    }
    for modules, trainable in parts.values():
        for module in modules:
            module.requires_grad_(trainable)
    model.config.freeze_geometry_encoder = not args.train_geometry_encoder
    counts = {  # ZeRO-3 partitions parameters at load time: their full size is `ds_numel`
        name: sum(getattr(p, "ds_numel", p.numel()) for m in ms for p in m.parameters() if p.requires_grad)
        for name, (ms, _) in parts.items()
    }
    if not any(counts.values()) and not args.use_lora:
        raise ValueError("nothing to train: every part is frozen (see --train_llm, --train_adapter, ...)")
    return counts


def lora_config(args: ModelArguments):
    from peft import LoraConfig

    modules_to_save = (["geometry_fusion"] if args.train_adapter else []) + (
        ["geometry_encoder"] if args.train_geometry_encoder else []
    )
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        modules_to_save=modules_to_save or None,
        task_type="CAUSAL_LM",
    )


def build_processor(model_args: ModelArguments, data_args: DataArguments) -> Spa3VLMProcessor | Spa3VLMQwen3Processor:
    path = model_args.processor_name_or_path or model_args.model_name_or_path or model_args.qwen_model_path
    qwen3 = is_qwen3(model_args.model_name_or_path or model_args.qwen_model_path)
    processor = (Spa3VLMQwen3Processor if qwen3 else Spa3VLMProcessor).from_pretrained(path)
    # one visual token = merge × merge patches (28 × 28 pixels for Qwen2.5-VL, 32 × 32 for Qwen3-VL)
    pixels_per_token = (processor.image_processor.patch_size * processor.image_processor.merge_size) ** 2
    max_pixels = data_args.max_visual_tokens_per_frame * pixels_per_token
    size = processor.image_processor.size  # Qwen's pixel budget per image: size.longest_edge (in pixels)
    if size.shortest_edge is not None and size.shortest_edge > max_pixels:
        raise ValueError(f"max_visual_tokens_per_frame gives {max_pixels} pixels, below the processor's minimum {size.shortest_edge}")
    size.longest_edge = max_pixels
    processor.max_frames = max(processor.max_frames, data_args.max_frames)
    return processor


EVAL_SET_NAME = re.compile(r"^([A-Za-z0-9_]+)=(.+)$")


def evaluation_sets(files: list[str] | None, media_root: str | None, sampling: dict, cache: int):
    """`--eval_file` → the Trainer's `eval_dataset`: None; one set from plain paths (logged as `eval_loss`); or, when
    every entry is NAME=FILE, one set per name (the Trainer logs `eval_NAME_loss`)."""
    if not files:
        return None
    named = [EVAL_SET_NAME.match(entry) for entry in files]
    if not any(named):
        return ConversationSamples(files, media_root, sampling, cache).dataset()
    if not all(named):
        plain = [entry for entry, match in zip(files, named) if not match]
        raise ValueError(f"--eval_file: name every file (NAME=FILE) or none; unnamed: {plain}")
    groups: dict[str, list[str]] = {}
    for match in named:
        groups.setdefault(match.group(1), []).append(match.group(2))
    return {name: ConversationSamples(paths, media_root, sampling, cache).dataset() for name, paths in groups.items()}


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    """Run SFT; returns the training metrics. `callbacks`: extra `TrainerCallback`s (e.g. a caller's progress)."""
    model_args, data_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, SFTConfig), argv, "Spa3-VLM supervised fine-tuning (TRL SFTTrainer)."
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level())
    if not data_args.train_file:
        raise ValueError("no training data: pass --train_file FILE.json[l] (VSI-590K style) and --media_root")
    if model_args.adapter_learning_rate is not None and model_args.adapter_learning_rate < 0:
        raise ValueError(f"--adapter_learning_rate must be >= 0, got {model_args.adapter_learning_rate}")
    if not 1 <= data_args.min_frames <= data_args.max_frames:
        raise ValueError(f"need 1 <= min_frames <= max_frames, got {data_args.min_frames}, {data_args.max_frames}")
    sampling = {
        "num_frames": None,
        "fps": data_args.fps,
        "min_frames": data_args.min_frames,
        "max_frames": data_args.max_frames,
        "frame_folder_fps": data_args.frame_folder_fps,
    }
    cache = data_args.video_cache_size
    train = ConversationSamples(data_args.train_file, data_args.media_root, sampling, cache).dataset()
    evaluation = evaluation_sets(data_args.eval_file, data_args.media_root, sampling, cache)
    training_args.remove_unused_columns = False  # rows are decoded from `record_index` on access
    model = build_model(model_args)
    counts = set_trainable(model, model_args)
    logger.info("trainable parameters per part (before LoRA): %s", counts)
    processor = build_processor(model_args, data_args)
    trainer = ResumableSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=lora_config(model_args) if model_args.use_lora else None,
        callbacks=callbacks,
        adapter_learning_rate=model_args.adapter_learning_rate,
    )
    result = train_resumable(trainer, training_args.resume_from_checkpoint)
    trainer.save_model()
    processor.save_pretrained(training_args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    write_training_card(trainer, data={"base_model": model_args.model_name_or_path or model_args.qwen_model_path, "train_file": data_args.train_file})
    # Gloo's threads may outlive an undestroyed process group and abort the interpreter at exit (SIGABRT after a
    # finished multi-process run); accelerate's end of training destroys it (a no-op in a single process).
    trainer.accelerator.end_training()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {**result.metrics, "steps": trainer.state.global_step, "losses": losses}


if __name__ == "__main__":
    main(sys.argv[1:])
