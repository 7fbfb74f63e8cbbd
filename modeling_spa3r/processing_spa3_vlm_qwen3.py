"""
Spa3-VLM processor for the Qwen3-VL backbone: Qwen3-VL's processor (its video processor and frame timestamps kept)
plus the Spa3R views of every sample.

Views are made the reference way (`geometry_view`); Qwen3-VL sees the same views centre-trimmed to multiples of its
patch × merge size. A video stays a video for Qwen3-VL: its frames are sampled here (the same frames become Spa3R
views) and handed over pre-sampled with their indices and frame rate, so Qwen3-VL's `<t seconds>` timestamps hold.
"""

import os
import re
from pathlib import Path

import torch
from transformers import Qwen3VLProcessor
from transformers.video_utils import VideoMetadata

from .processing_spa3_vlm import Spa3VLMProcessor, geometry_view, trim_to_multiple
from .validation import check_sampling
from .video import load_video_frames, require_av, sample_frame_indices


def _video_metadata(video, sampling: dict, num_frames: int) -> VideoMetadata:
    """Frame rate and sampled indices of a video (a file: read from its header, sampled as `load_video_frames`
    does); frame folders and lists use `video_fps` and consecutive indices."""
    fps, total, indices = sampling.get("video_fps"), num_frames, None
    if isinstance(video, (str, os.PathLike)) and Path(video).is_file():
        with require_av().open(str(video)) as container:
            stream = container.streams.video[0]
            fps, total = float(stream.average_rate or 0) or None, stream.frames
        if total:
            policy = {key: sampling.get(key) for key in ("num_frames", "fps", "max_frames")}
            indices = sample_frame_indices(total, source_fps=fps, min_frames=sampling.get("min_frames") or 1, **policy)
    if indices is None or len(indices) != num_frames:
        total, indices = num_frames, list(range(num_frames))
    return VideoMetadata(total_num_frames=total, fps=fps, frames_indices=indices)


class Spa3VLMQwen3Processor(Qwen3VLProcessor):
    r"""
    Qwen3-VL processor whose outputs also carry the Spa3R views of every sample:

    - `geometry_pixel_values` (num_views, 3, H, W) in [0, 1]: the views of every scene in order (a sample's images
      and sampled video frames in text order), zero-padded bottom/right to the largest scene;
    - `geometry_scene_sizes` (S, 3): (V, H, W) of each sample that has images or videos;
    - `geometry_image_scenes` (num_images,) / `geometry_video_scenes` (num_videos,): the scene of every image / video.

    Args:
        image_processor / tokenizer / video_processor / chat_template: as for Qwen3-VL.
        geometry_size, num_frames, fps, min_frames, max_frames, use_geometry: as for [`Spa3VLMProcessor`].
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        video_processor=None,
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
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=chat_template,
            **kwargs,
        )

    @property
    def model_input_names(self):
        return super().model_input_names + [
            "geometry_pixel_values",
            "geometry_scene_sizes",
            "geometry_image_scenes",
            "geometry_video_scenes",
        ]

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        sampling = {
            "num_frames": kwargs.pop("num_frames", self.num_frames),
            "fps": kwargs.pop("fps", self.fps),
            "min_frames": kwargs.pop("min_frames", self.min_frames),
            "max_frames": kwargs.pop("max_frames", self.max_frames),
            "video_fps": kwargs.pop("video_fps", None),
        }
        for key in ("do_sample_frames", "video_metadata"):
            kwargs.pop(key, None)
        check_sampling(**sampling)
        if text is None:
            raise ValueError("Spa3VLMQwen3Processor needs text with one image/video placeholder per image/video")
        texts = [text] if isinstance(text, str) else list(text)
        placeholder = re.escape(self.image_token) + "|" + re.escape(self.video_token)
        if images is not None and len(texts) == 1 and not re.search(placeholder, texts[0]):
            count = len(images) if isinstance(images, (list, tuple)) else 1
            texts = ["<|vision_start|>" + self.image_token + "<|vision_end|>"] * count + texts[:1]
            texts = ["".join(texts)]
        per_sample_images = Spa3VLMProcessor._group(images, texts, self.image_token, "image")
        per_sample_videos = Spa3VLMProcessor._group(videos, texts, self.video_token, "video")

        multiple = self.image_processor.patch_size * self.image_processor.merge_size
        qwen_images, qwen_videos, metadata, scenes, image_scenes, video_scenes = [], [], [], [], [], []
        for sample, sample_text in enumerate(texts):
            sample_images, sample_videos = iter(per_sample_images[sample]), iter(per_sample_videos[sample])
            views, scene = [], len(scenes)
            for match in re.finditer(placeholder, sample_text):
                if match.group() == self.image_token:
                    view = geometry_view(next(sample_images), self.geometry_size)
                    views.append(view)
                    qwen_images.append(trim_to_multiple(view, multiple))
                    image_scenes.append(scene)
                else:
                    video = next(sample_videos)
                    frames = load_video_frames(video, sampling)
                    frame_views = [geometry_view(frame, self.geometry_size) for frame in frames]
                    views.extend(frame_views)
                    qwen_videos.append(torch.stack([trim_to_multiple(v, multiple) for v in frame_views]))
                    metadata.append(_video_metadata(video, sampling, len(frames)))
                    video_scenes.append(scene)
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

        if qwen_images or qwen_videos:
            kwargs["do_rescale"] = False  # views are already in [0, 1]
        if qwen_videos:
            kwargs.update(video_metadata=metadata, do_sample_frames=False)
        outputs = super().__call__(
            images=qwen_images or None,
            videos=qwen_videos or None,
            text=texts if not isinstance(text, str) else texts[0],
            **kwargs,
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
            if image_scenes:
                outputs["geometry_image_scenes"] = torch.tensor(image_scenes)
            if video_scenes:
                outputs["geometry_video_scenes"] = torch.tensor(video_scenes)
        return outputs


__all__ = ["Spa3VLMQwen3Processor"]
