"""
Inference front doors: `spa3r ask` (a Spa3-VLM answers a question about a video or images) and `spa3r encode`
(Spa3R latents of a set of views, written to safetensors).

Both accept a local checkpoint directory or a Hub id. Videos become frames sampled uniformly; every frame is one image
for Qwen and one view of the scene for Spa3R (the Spa3-VLM processor routes the geometry views to the model).
"""

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from .processing_spa3_vlm import geometry_view
from .video import FRAME_EXTENSIONS, load_video_frames, natural_key

LATENTS_FORMAT = "spa3r-latents/v1"


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------


def load_images(paths) -> list[Image.Image]:
    """RGB images from files; a directory stands for all the images in it, in natural order."""
    images = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
            if not files:
                raise ValueError(f"image folder {path} contains no images ({', '.join(FRAME_EXTENSIONS)})")
            images.extend(_open_image(p) for p in _natural_sorted(files))
        else:
            images.append(_open_image(path))
    if not images:
        raise ValueError("no images given")
    return images


def _natural_sorted(files: list[Path]) -> list[Path]:
    return sorted(files, key=lambda p: natural_key(p.name))


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise ValueError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def load_frames(video=None, images=None, num_frames: int = 32) -> list[Image.Image]:
    """`num_frames` uniformly sampled frames of a video (file or frame folder), or the given images, as PIL RGB."""
    if (video is None) == (images is None):
        raise ValueError("pass exactly one of a video or images")
    if video is not None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        sampling = {"num_frames": num_frames, "fps": None, "min_frames": 1, "max_frames": None, "video_fps": None}
        return load_video_frames(os.fspath(video), sampling)
    return load_images(images)


# ---------------------------------------------------------------------------------------------------------------------
# ask
# ---------------------------------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _dtype(name: str):
    if name == "auto":
        return "auto"
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return getattr(torch, name)


def load_vlm(model_id: str, dtype: str = "auto", device: str | None = None):
    """(model, processor) of a Spa3-VLM checkpoint directory or Hub id, in eval mode on `device`."""
    import modeling_spa3r  # noqa: F401  (registers the Spa3-VLM Auto classes)
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(model_id)
    if config.model_type != "spa3_vlm":
        raise ValueError(
            f"{model_id} is a {config.model_type!r} checkpoint, not a Spa3-VLM one (model_type 'spa3_vlm'); convert "
            "official hustvl/Spa3-VLM weights with `spa3r convert vlm`"
        )
    model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=_dtype(dtype)).eval()
    model.to(resolve_device(device))
    return model, AutoProcessor.from_pretrained(model_id)


def build_messages(images: list, question: str) -> list[dict]:
    """One user turn: every image (frame) in order, then the question."""
    return [
        {"role": "user", "content": [*({"type": "image", "image": image} for image in images), {"type": "text", "text": question}]}
    ]


class _TokenProgress(BaseStreamer):
    """A tqdm bar over generated tokens (the first `put` is the prompt)."""

    def __init__(self, total: int, disable: bool):
        self.bar = tqdm(total=total, desc="generating", unit="tok", disable=disable, leave=False)
        self.prompt_seen = False

    def put(self, value):
        if self.prompt_seen:
            self.bar.update(1)
        self.prompt_seen = True

    def end(self):
        self.bar.close()


def answer(model, processor, images: list, question: str, max_new_tokens: int = 128, progress: bool = False) -> str:
    """Greedy answer of the Spa3-VLM to `question` about `images` (the views of one scene)."""
    if not question.strip():
        raise ValueError("the question is empty")
    if not images:
        raise ValueError("no images or frames given")
    text = processor.apply_chat_template(build_messages(images, question), add_generation_prompt=True, tokenize=False)
    # every frame is one view; allow as many as were given even above the processor's training-time maximum
    max_frames = max(processor.max_frames, len(images))
    inputs = processor(images=images, text=text, max_frames=max_frames, return_tensors="pt").to(model.device)
    inputs.update({k: v.to(model.dtype) for k, v in inputs.items() if v.is_floating_point()})
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            streamer=_TokenProgress(max_new_tokens, disable=not progress),
        )
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _frames_parser(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file (read with PyAV) or a folder of frame images")
    source.add_argument("--images", nargs="+", metavar="PATH", help="image files (or folders of images), in order")
    parser.add_argument(
        "--num-frames", type=int, default=32, help="frames sampled uniformly from --video (default 32, the VSI-Bench protocol)"
    )


def build_ask_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spa3r ask",
        description="Answer a question about a video or a set of images with a Spa3-VLM checkpoint (greedy decoding).",
    )
    parser.add_argument("model", help="Spa3-VLM checkpoint directory or Hub id")
    parser.add_argument(
        "question", nargs="?", help="the question, e.g. \"How many chairs are in the room?\" (may also follow --images)"
    )
    _frames_parser(parser)
    parser.add_argument("--max-new-tokens", type=int, default=128, help="most tokens to generate (default 128)")
    parser.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="auto", help="auto (the checkpoint's), bfloat16, float16 or float32")
    parser.add_argument("--json", action="store_true", help="print a JSON object (question, answer, frames) instead")
    return parser


def ask_main(argv=None) -> int:
    parser = build_ask_parser()
    args = parser.parse_intermixed_args(argv)
    if args.question is None and args.images and len(args.images) > 1 and not Path(args.images[-1]).exists():
        args.question = args.images.pop()  # `--images a.jpg b.jpg "question"`: --images took the question too
    if args.question is None:
        parser.error("the question is missing")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    try:
        frames = load_frames(args.video, args.images, args.num_frames)
        model, processor = load_vlm(args.model, args.dtype, args.device)
        text = answer(model, processor, frames, args.question, args.max_new_tokens, progress=sys.stderr.isatty())
    except (ValueError, OSError) as error:
        print(f"spa3r ask: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"question": args.question, "answer": text, "num_frames": len(frames)}, ensure_ascii=False))
    else:
        print(text)
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------------------------------------


def load_spa3r_encoder(model_id: str, dtype: str = "float32", device: str | None = None):
    """
    The Spa3R encoder (`Spa3RModel`) of a Spa3R checkpoint (Spa3RModel or Spa3RForPretraining) or of a Spa3-VLM
    checkpoint (its geometry encoder), with the view width its checkpoint was made for.
    Returns (encoder, geometry_size).
    """
    import modeling_spa3r  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoModelForImageTextToText

    from .modeling_spa3r import Spa3RModel

    config = AutoConfig.from_pretrained(model_id)
    torch_dtype = torch.float32 if dtype == "auto" else _dtype(dtype)
    if config.model_type == "spa3r":
        # a Spa3RForPretraining checkpoint also holds the decoder, heads and teachers: expected, not reported
        with _quiet_transformers():
            encoder, info = Spa3RModel.from_pretrained(model_id, dtype=torch_dtype, output_loading_info=True)
        if info["missing_keys"]:
            raise ValueError(f"{model_id} lacks Spa3R encoder weights: {sorted(info['missing_keys'])}")
        size = config.view_width
    elif config.model_type == "spa3_vlm":
        from transformers import AutoProcessor

        vlm = AutoModelForImageTextToText.from_pretrained(model_id, dtype=torch_dtype)
        encoder = vlm.model.geometry_encoder
        size = AutoProcessor.from_pretrained(model_id).geometry_size
    else:
        raise ValueError(
            f"{model_id} is a {config.model_type!r} checkpoint; `spa3r encode` needs a Spa3R ('spa3r') or Spa3-VLM "
            "('spa3_vlm') checkpoint"
        )
    return encoder.eval().to(resolve_device(device)), size


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def scene_views(images: list, size: int) -> torch.Tensor:
    """Reference geometry preprocessing of every image → one scene (1, V, 3, H, W) in [0, 1]."""
    views = [geometry_view(image, size) for image in tqdm(images, desc="preprocessing", unit="view", leave=False)]
    shapes = sorted({tuple(view.shape[-2:]) for view in views})
    if len(shapes) > 1:
        raise ValueError(
            f"the views have different sizes after resizing to width {size}: {shapes}; all views of a scene must "
            "share one aspect ratio"
        )
    return torch.stack(views)[None]


def encode(encoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """Spa3R latents (B, Q, D) of views (B, V, 3, H, W) in [0, 1]."""
    with torch.inference_mode():
        return encoder(pixel_values=pixel_values.to(encoder.device, encoder.dtype)).latents


def build_encode_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spa3r encode",
        description=(
            "Encode the views of one scene (images or sampled video frames) into Spa3R latents (1, Q, D) and write them "
            "to a safetensors file with metadata. MODEL is a Spa3R checkpoint or a Spa3-VLM one (its geometry encoder)."
        ),
    )
    parser.add_argument("model", help="Spa3R or Spa3-VLM checkpoint directory or Hub id")
    _frames_parser(parser)
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument(
        "--size", type=int, default=None, help="view width, a multiple of 14 (default: the checkpoint's, 518 for the reference)"
    )
    parser.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    return parser


def encode_main(argv=None) -> int:
    from safetensors.torch import save_file

    parser = build_encode_parser()
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error(f"--out must be a .safetensors file, got {args.out}")
    if args.size is not None and (args.size < 14 or args.size % 14):
        parser.error(f"--size must be a positive multiple of 14 (the patch size), got {args.size}")
    try:
        frames = load_frames(args.video, args.images, args.num_frames)
        encoder, checkpoint_size = load_spa3r_encoder(args.model, args.dtype, args.device)
        size = args.size or checkpoint_size
        pixel_values = scene_views(frames, size)
        latents = encode(encoder, pixel_values)
    except (ValueError, OSError) as error:
        print(f"spa3r encode: error: {error}", file=sys.stderr)
        return 2
    sources = [args.video] if args.video else list(args.images)
    metadata = {
        "format": LATENTS_FORMAT,
        "model": args.model,
        "sources": json.dumps(sources),
        "num_views": str(pixel_values.shape[1]),
        "view_size": f"{pixel_values.shape[-2]}x{pixel_values.shape[-1]}",
        "num_queries": str(latents.shape[1]),
        "hidden_size": str(latents.shape[2]),
        "dtype": str(latents.dtype).removeprefix("torch."),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous().cpu()}, str(out), metadata=metadata)
    print(f"wrote latents {tuple(latents.shape)} of {pixel_values.shape[1]} views to {out}")
    return 0


__all__ = ["answer", "ask_main", "encode", "encode_main", "load_frames", "load_spa3r_encoder", "load_vlm", "scene_views"]
