"""Checkpoints that survive `kill -9`: a completion record per checkpoint, `last` resolved to the newest complete
one, finished runs left alone, and weights restored under the model's own key layout.

`Trainer` writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG, `trainer_state.json`) and deletes
old ones with `rmtree`; a kill in between leaves a folder that looks like a checkpoint but cannot be resumed. The
`CheckpointCompletion` callback writes `checkpoint_complete.json` (every file and its size) once a save has finished;
`resolve_checkpoint` only accepts folders whose record matches the files on disk.
"""

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ..validation import DataError, check_weight_files

logger = logging.getLogger(__name__)

COMPLETION_FILE = "checkpoint_complete.json"
STATE_FILE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
#: Prefix an interrupted checkpoint folder is renamed to (kept for inspection, ignored by `Trainer`'s rotation).
INCOMPLETE_PREFIX = "incomplete-"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class CheckpointCompletion(TrainerCallback):
    """After every save, records the files of the new checkpoint folder (written last: its presence = complete)."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank has written its files (e.g. its RNG state) before the record
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if folder.is_dir():
                write_completion(folder)
        return control


def write_atomically(path: Path, data: bytes) -> None:
    """Write under a temporary name, fsync, then rename: a kill leaves the old file or none, never a partial one."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_completion(folder: Path) -> None:
    """Write `checkpoint_complete.json` atomically (temporary name, then rename)."""
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETION_FILE
    }
    write_atomically(folder / COMPLETION_FILE, json.dumps({"files": files}, indent=1).encode())


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot be resumed from (None when it can)."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"not found: {folder}"
    record = folder / COMPLETION_FILE
    if record.is_file():
        try:
            files = json.loads(record.read_text())["files"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return f"{record} is corrupt"
        for name, size in files.items():
            path = folder / name
            if not path.is_file():
                return f"{path} is missing (a save or a deletion was interrupted)"
            if path.stat().st_size != size:
                return f"{path} has {path.stat().st_size} bytes, {size} when saved (the file was cut short or replaced)"
        return _unreadable_file(folder)
    # A checkpoint written without the callback: it needs its state and weights at least.
    try:
        json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"{folder / STATE_FILE} is missing (the save was interrupted)"
    except json.JSONDecodeError:
        return f"{folder / STATE_FILE} is truncated (the save was interrupted)"
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return f"{folder} holds no weights ({', '.join(WEIGHT_FILES)})"
    return _unreadable_file(folder)


def _unreadable_file(folder: Path) -> str | None:
    try:
        check_weight_files(folder)
    except DataError as error:
        return str(error)
    return None


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-N` folders of a run, by step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir: str | os.PathLike, resume: str | bool | None, set_aside: bool = True) -> str | None:
    """The checkpoint to resume from: `last`/`True` → the newest complete one in `output_dir` (None if there is
    none), a path → that folder if complete (else `DataError` naming the problem), `None`/`False`/"" → None.
    Incomplete folders newer than the chosen one are renamed `incomplete-checkpoint-N` (with a warning) so that
    `Trainer` neither resumes from nor rotates against them."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or resume in ("last", "true", "True"):
        chosen, skipped = None, []
        for folder in reversed(checkpoint_folders(output_dir)):
            problem = checkpoint_problem(folder)
            if problem is None:
                chosen = folder
                break
            skipped.append((folder, problem))
        for folder, problem in skipped:
            logger.warning("skipping incomplete checkpoint %s: %s", folder, problem)
            if set_aside:
                folder.rename(folder.with_name(INCOMPLETE_PREFIX + folder.name))
        if chosen is None:
            logger.info("no complete checkpoint in %s: starting from scratch", output_dir)
            return None
        return str(chosen)
    problem = checkpoint_problem(resume)
    if problem is not None:
        raise DataError(f"cannot resume from {resume}: {problem}")
    return str(resume)


def load_checkpoint_weights(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Load `folder`'s weights into `model`, renaming keys saved in a legacy layout (Qwen2.5-VL's checkpoint
    conversion mapping) to the model's own; every parameter must be found (`DataError` names the file)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()}) if index.is_file() else [folder / "model.safetensors"]
    saved = {}
    for path in files:
        try:
            saved.update(load_file(str(path)))
        except Exception as error:  # safetensors raises its own SafetensorError for corrupt or truncated files
            raise DataError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from error
    expected = model.state_dict()
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    renamed = {rename_source_key(k, renamings, converters, model.base_model_prefix, expected)[0]: v for k, v in saved.items()}
    missing = sorted(set(expected) - set(renamed) - set(getattr(model, "_keys_to_ignore_on_save", None) or ()))
    unexpected = sorted(set(renamed) - set(expected))
    if unexpected or (missing and not _missing_are_frozen_teachers(model, missing)):
        raise DataError(
            f"{files[0]} does not match the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    model.load_state_dict(renamed, strict=False)


def _missing_are_frozen_teachers(model: torch.nn.Module, missing: list[str]) -> bool:
    """Checkpoints may leave out frozen parameters the model does not save (Spa3R's teachers)."""
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return all(name in frozen or name in buffers for name in missing)


def finished_state(checkpoint: str | None, max_steps: int) -> TrainerState | None:
    """The checkpoint's trainer state when it already reached the run's end (`max_steps`), else None."""
    if checkpoint is None:
        return None
    state = TrainerState.load_from_json(os.path.join(checkpoint, STATE_FILE))
    target = max_steps if max_steps > 0 else state.max_steps
    return state if target and state.global_step >= target else None


def train_resumable(trainer, resume: str | bool | None) -> TrainOutput:
    """`trainer.train` with atomic checkpoints and exact resume: `resume` = `last`, a path, or None. A run whose
    checkpoint already reached `max_steps` is restored (weights and state) and not trained further."""
    trainer.add_callback(CheckpointCompletion())
    checkpoint = resolve_checkpoint(trainer.args.output_dir, resume, set_aside=trainer.args.should_save)
    state = finished_state(checkpoint, trainer.args.max_steps)
    if state is None:
        return trainer.train(resume_from_checkpoint=checkpoint)
    logger.warning("%s already reached step %d (max_steps): nothing left to train", checkpoint, state.global_step)
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = state
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    previous = Path(trainer.args.output_dir) / "train_results.json"  # the metrics of the run that finished
    metrics = json.loads(previous.read_text()) if previous.is_file() else {}
    metrics = {"train_loss": losses[-1] if losses else float("nan"), "epoch": state.epoch, **metrics}
    return TrainOutput(state.global_step, metrics["train_loss"], metrics)
