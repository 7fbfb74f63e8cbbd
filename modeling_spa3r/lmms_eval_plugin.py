"""lmms-eval model plugin: ``lmms-eval --model spa3_vlm --model_args pretrained=PATH --tasks vsibench``.

Registration uses lmms-eval's entry-point group ``lmms_eval.models`` (lmms-eval >= 0.7), declared in
the package metadata as ``spa3_vlm = modeling_spa3r.lmms_eval_plugin:spa3_vlm_manifest``.

The model wrapper follows the Spa3-VLM evaluation protocol, the same as ``spa3r eval``: every video
is decoded and ``num_frames`` frames (default 32) at ``floor(linspace(0, N-1, 32))`` are given to the
model as a list of images (one image placeholder per frame, frames before the text), the task's
prompt text is used verbatim, and decoding is greedy. It also runs plain Qwen2.5-VL checkpoints.

Model arguments (``--model_args``): ``pretrained`` (checkpoint path, required), ``num_frames``
(32), ``batch_size`` (1), ``dtype`` (``auto``), ``attn_implementation`` (optional).
"""

from __future__ import annotations

from pathlib import Path

from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from .eval_vsibench import generate_answers, load_frames, load_model_and_processor
from .video import VIDEO_EXTENSIONS

__all__ = ["Spa3VLM", "spa3_vlm_manifest"]


def spa3_vlm_manifest() -> ModelManifest:
    """Entry point payload that registers ``spa3_vlm`` with lmms-eval."""
    return ModelManifest(model_id="spa3_vlm", simple_class_path=f"{__name__}.Spa3VLM")


class Spa3VLM(lmms):
    """lmms-eval wrapper of a Spa3-VLM (or Qwen2.5-VL) checkpoint for generation tasks."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_frames: int = 32,
        batch_size: int = 1,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"spa3_vlm: unknown model_args {sorted(kwargs)}")
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        self._rank, self._world_size = state.process_index, state.num_processes
        self.num_frames = int(num_frames)
        self.batch_size_per_gpu = int(batch_size)
        self._model, self.processor = load_model_and_processor(pretrained, dtype, state.device, attn_implementation)

    @property
    def model(self):
        return self._model

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def _frames(self, visuals) -> list:
        """Turn a document's visuals (video paths, frame folders or PIL images) into a frame list."""
        from PIL import Image

        frames = []
        for visual in visuals or []:
            if isinstance(visual, Image.Image):
                frames.append(visual.convert("RGB"))
            elif isinstance(visual, (str, Path)) and (Path(visual).is_dir() or str(visual).lower().endswith(VIDEO_EXTENSIONS)):
                frames.extend(load_frames(visual, self.num_frames))
            else:
                raise ValueError(f"spa3_vlm: unsupported visual {visual!r} (expected a video path, frame folder or PIL image)")
        return frames

    def generate_until(self, requests) -> list[str]:
        """Answer each request greedily; ``gen_kwargs['until']`` strings cut the answer."""
        from tqdm.auto import tqdm

        answers = []
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="spa3_vlm")
        for start in range(0, len(requests), self.batch_size):
            chunk = [request.args for request in requests[start : start + self.batch_size]]
            frames, prompts, limits, stops = [], [], [], []
            for context, gen_kwargs, doc_to_visual, doc_id, task, split in chunk:
                frames.append(self._frames(doc_to_visual(self.task_dict[task][split][doc_id])))
                prompts.append(context)
                if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0) or 0) > 0:
                    raise ValueError("spa3_vlm decodes greedily; set temperature 0 / do_sample false")
                limits.append(int(gen_kwargs.get("max_new_tokens", 16)))
                until = gen_kwargs.get("until") or []
                stops.append([until] if isinstance(until, str) else list(until))
            groups = {}  # samples of one generate() call share frame count and token budget
            for index, (sample, limit) in enumerate(zip(frames, limits)):
                groups.setdefault((len(sample), limit), []).append(index)
            outputs = [""] * len(chunk)
            for (_, limit), indices in groups.items():
                texts = generate_answers(
                    self._model, self.processor, [frames[i] for i in indices], [prompts[i] for i in indices], limit
                )
                for index, text in zip(indices, texts):
                    outputs[index] = text
            for output, until in zip(outputs, stops):
                for stop in until:
                    if stop:
                        output = output.split(stop)[0]
                answers.append(output)
            progress.update(len(chunk))
        progress.close()
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("spa3_vlm supports generation tasks only (e.g. vsibench)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("spa3_vlm does not support multi-round generation")
