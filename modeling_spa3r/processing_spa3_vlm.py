"""
Spa3-VLM processor: Qwen2.5-VL's processor plus the Spa3R views of every sample.

Every image and every sampled video frame is one view. Views are resized the reference way (width `geometry_size`,
height rounded to a multiple of 14, bicubic, centre-cropped to `geometry_size` if taller); Qwen sees the same view
centre-trimmed to multiples of 28. A video placeholder becomes one image placeholder per frame, so for Qwen a video
is a sequence of images, and for Spa3R all views of a sample form one scene.
"""

import re

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2_5_VLProcessor

from .validation import check_sampling
from .video import FRAME_EXTENSIONS, load_video_frames, natural_key, sample_frame_indices, to_pil

def geometry_view(image, size: int = 518, patch_size: int = 14) -> torch.Tensor:
    """Reference Spa3R/VGGT "crop" preprocessing → (3, H, W) float in [0, 1], W = size, H a multiple of 14 ≤ size."""
    image = to_pil(image)
    width, height = image.size
    new_height = round(height * (size / width) / patch_size) * patch_size
    if new_height < patch_size:
        raise ValueError(f"image of {width}x{height} is too wide: it would be less than {patch_size} pixels high")
    view = torch.from_numpy(np.array(image.resize((size, new_height), Image.Resampling.BICUBIC))).permute(2, 0, 1)
    view = view.float() / 255.0
    if new_height > size:
        top = (new_height - size) // 2
        view = view[:, top : top + size]
    return view


def trim_to_multiple(view: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre-crop (3, H, W) to the largest multiples of `multiple`."""
    height, width = (view.shape[-2] // multiple) * multiple, (view.shape[-1] // multiple) * multiple
    if height == 0 or width == 0:
        raise ValueError(f"view of {view.shape[-1]}x{view.shape[-2]} is smaller than {multiple} pixels")
    top, left = (view.shape[-2] - height) // 2, (view.shape[-1] - width) // 2
    return view[:, top : top + height, left : left + width]


class Spa3VLMProcessor(Qwen2_5_VLProcessor):
    r"""
    Qwen2.5-VL processor whose outputs also carry the Spa3R views of every sample:

    - `geometry_pixel_values` (num_views, 3, H, W) in [0, 1]: every image/frame of the batch in order, zero-padded
      bottom/right to the largest scene when scenes differ in size;
    - `geometry_scene_sizes` (S, 3): (V, H, W) of each sample that has images (text-only samples have no scene).

    Args:
        image_processor / tokenizer / chat_template: as for Qwen2.5-VL.
        geometry_size: width of the Spa3R views (reference 518; a multiple of 14).
        num_frames: frames sampled uniformly from a video when no `fps` is given (evaluation protocol: 32).
        fps: sample about this many frames per second instead (SFT recipe: 0.5, min 4, max 8).
        min_frames / max_frames: bounds of fps sampling; `max_frames` is also the most views a sample may have.
        use_geometry: emit the Spa3R inputs; `False` gives the same Qwen inputs without geometry (an ablation: the
            model then runs as its base Qwen2.5-VL).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        geometry_size: int = 518,
        num_frames: int | None = 32,
        fps: float | None = None,
        min_frames: int = 4,
        max_frames: int = 32,
        use_geometry: bool = True,
        **kwargs,
    ):
        if geometry_size % 14:
            raise ValueError(f"geometry_size {geometry_size} is not divisible by 14 (Spa3R's patch size)")
        self.geometry_size = geometry_size
        self.num_frames = num_frames
        self.fps = fps
        self.min_frames = min_frames
        self.max_frames = max_frames
        self.use_geometry = use_geometry
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)

    @property
    def model_input_names(self):
        return super().model_input_names + ["geometry_pixel_values", "geometry_scene_sizes"]

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        sampling = {
            "num_frames": kwargs.pop("num_frames", self.num_frames),
            "fps": kwargs.pop("fps", self.fps),
            "min_frames": kwargs.pop("min_frames", self.min_frames),
            "max_frames": kwargs.pop("max_frames", self.max_frames),
            "video_fps": kwargs.pop("video_fps", None),
        }
        kwargs.pop("do_sample_frames", None)
        check_sampling(**sampling)
        if text is None:
            raise ValueError("Spa3VLMProcessor needs text with one image/video placeholder per image/video")
        texts = [text] if isinstance(text, str) else list(text)
        if images is not None and len(texts) == 1 and not re.search(
            re.escape(self.image_token) + "|" + re.escape(self.video_token), texts[0]
        ):
            # a bare question with images (e.g. the image-text-to-text pipeline): the images come first, one block each
            count = len(images) if isinstance(images, (list, tuple)) else 1
            texts = ["<|vision_start|>" + self.image_token + "<|vision_end|>"] * count + texts[:1]
            texts = ["".join(texts)]
        per_sample_images = self._group(images, texts, self.image_token, "image")
        per_sample_videos = self._group(videos, texts, self.video_token, "video")

        new_texts, qwen_images, scenes = [], [], []
        merge = self.image_processor.patch_size * self.image_processor.merge_size
        image_block = self.image_token
        frame_separator = "<|vision_end|><|vision_start|>"
        for sample, sample_text in enumerate(texts):
            sample_images, sample_videos = iter(per_sample_images[sample]), iter(per_sample_videos[sample])
            views, pieces, last = [], [], 0
            for match in re.finditer(re.escape(self.image_token) + "|" + re.escape(self.video_token), sample_text):
                pieces.append(sample_text[last : match.start()])
                last = match.end()
                if match.group() == self.image_token:
                    views.append(geometry_view(next(sample_images), self.geometry_size))
                    pieces.append(image_block)
                else:
                    frames = load_video_frames(next(sample_videos), sampling)
                    views.extend(geometry_view(frame, self.geometry_size) for frame in frames)
                    pieces.append(frame_separator.join([image_block] * len(frames)))
            pieces.append(sample_text[last:])
            new_texts.append("".join(pieces))
            if not views:
                continue
            if len(views) > sampling["max_frames"]:
                raise ValueError(
                    f"sample {sample} has {len(views)} views (images + frames), more than max_frames={sampling['max_frames']}"
                )
            sizes = {tuple(view.shape[-2:]) for view in views}
            if len(sizes) > 1:
                raise ValueError(
                    f"frames of different sizes within sample {sample}: {sorted(sizes)} after resizing to width "
                    f"{self.geometry_size}; all views of a scene must share one aspect ratio"
                )
            scenes.append(torch.stack(views))  # (V, 3, H, W)
            qwen_images.extend(trim_to_multiple(view, merge) for view in views)

        if qwen_images:
            kwargs["do_rescale"] = False  # views are already in [0, 1]
        outputs = super().__call__(
            images=qwen_images or None, text=new_texts if not isinstance(text, str) else new_texts[0], **kwargs
        )
        if scenes and self.use_geometry:
            height = max(scene.shape[-2] for scene in scenes)
            width = max(scene.shape[-1] for scene in scenes)
            padded = torch.zeros(sum(len(s) for s in scenes), 3, height, width)
            start = 0
            for scene in scenes:
                padded[start : start + len(scene), :, : scene.shape[-2], : scene.shape[-1]] = scene
                start += len(scene)
            outputs["geometry_pixel_values"] = padded
            outputs["geometry_scene_sizes"] = torch.tensor([[len(s), s.shape[-2], s.shape[-1]] for s in scenes])
        return outputs

    @staticmethod
    def _group(inputs, texts: list[str], token: str, kind: str) -> list[list]:
        """Per-sample lists of images/videos: kept if nested per sample, else split by the placeholder counts."""
        counts = [t.count(token) for t in texts]
        if inputs is None:
            if any(counts):
                raise ValueError(f"the text has {sum(counts)} {kind} placeholder(s) but no {kind}s were passed")
            return [[] for _ in texts]
        if not isinstance(inputs, (list, tuple)) or (kind == "video" and _is_single_video(inputs)):
            inputs = [inputs]
        if len(inputs) == len(texts) and all(isinstance(x, (list, tuple)) for x in inputs) and not (
            kind == "video" and all(_is_single_video(x) for x in inputs) and sum(counts) == len(inputs)
        ):
            grouped = [list(x) for x in inputs]
        else:
            flat, grouped, start = list(inputs), [], 0
            if len(flat) != sum(counts):
                raise ValueError(f"{len(flat)} {kind}(s) passed but the text has {sum(counts)} {kind} placeholder(s)")
            for count in counts:
                grouped.append(flat[start : start + count])
                start += count
        for sample, (group, count) in enumerate(zip(grouped, counts)):
            if len(group) != count:
                raise ValueError(f"sample {sample} has {count} {kind} placeholder(s) but {len(group)} {kind}(s)")
        return grouped


def _is_single_video(x) -> bool:
    """A list of frames (PIL / arrays) is one video; a list of paths or of frame lists is several."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], (Image.Image, np.ndarray, torch.Tensor))


__all__ = ["FRAME_EXTENSIONS", "Spa3VLMProcessor", "geometry_view", "load_video_frames", "natural_key", "sample_frame_indices"]
