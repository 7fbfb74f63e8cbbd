"""
Spa3-VLM Gradio app (for a Hub Space or a local machine): upload a video or images, ask a spatial question, read the
answer and look at what the geometry encoder saw.

The picture: Spa3-VLM consumes only Spa3R's latent (Q × D query tokens), which is not a field over the image. What the
app draws instead is honest about that: the Spa3R encoder's output tokens at every view's patches (the tokens the
queries were encoded together with), projected to RGB with one PCA over all views, under the frames themselves.
With `--pretraining DIR` (a Spa3RForPretraining checkpoint) it draws what PSFM actually predicts: the feature fields
of held-out views (the last ones) from the latent of the others, next to the teachers' fields.

    python app/app.py --model path/or/hub-id-of-Spa3-VLM [--pretraining DIR] [--port 7860]
"""

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from modeling_spa3r.inference import answer, load_frames, load_vlm, scene_views
from modeling_spa3r.processing_spa3_vlm import FRAME_EXTENSIONS
from modeling_spa3r.visualize import default_targets, field_figure, fields_figure, predict_fields

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


@dataclass
class UploadLimits:
    """What one request may upload; checked from file sizes and image/video headers, before anything is decoded."""

    max_files: int = 64
    max_bytes: int = 256 * 2**20  # all files together
    max_pixels: int = 300_000_000  # all images together, or a video's decoded frames (32 frames of 4K: 265 M)


def check_upload(paths: list[str], limits: UploadLimits, num_frames: int) -> None:
    """`ValueError` naming the limit an upload exceeds (file count, bytes, pixels, a decompression bomb)."""
    if len(paths) > limits.max_files:
        raise ValueError(f"{len(paths)} files uploaded; at most {limits.max_files} per question")
    total = sum(os.path.getsize(p) for p in paths)
    if total > limits.max_bytes:
        raise ValueError(f"the upload holds {total / 2**20:.1f} MiB; at most {limits.max_bytes / 2**20:.0f} MiB per question")
    pixels = 0
    for path in paths:
        name = Path(path).name
        if path.lower().endswith(VIDEO_EXTENSIONS):
            import av

            try:
                with av.open(path) as container:
                    stream = container.streams.video[0]
                    pixels += stream.codec_context.width * stream.codec_context.height * num_frames
            except (av.FFmpegError, IndexError) as error:
                raise ValueError(f"{name} is not a readable video ({error})") from error
            continue
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except Image.DecompressionBombError as error:
            raise ValueError(f"{name} is too large to decode safely (decompression bomb check: {error})") from error
        except OSError as error:
            raise ValueError(f"{name} is not a readable image ({error})") from error
        pixels += width * height
    if pixels > limits.max_pixels:
        raise ValueError(f"the upload holds {pixels / 1e6:.1f} megapixels; at most {limits.max_pixels / 1e6:.1f} per question")


class Spa3App:
    """Model, processor and the optional pretraining model; `run` answers one upload + question."""

    def __init__(self, model: str, pretraining: str | None = None, num_frames: int = 32, max_new_tokens: int = 128,
                 device: str | None = None, limits: UploadLimits | None = None):
        self.limits = limits or UploadLimits()
        self.model, self.processor = load_vlm(model, device=device)
        self.pretraining = None
        if pretraining is not None:
            from modeling_spa3r import Spa3RForPretraining

            self.pretraining = Spa3RForPretraining.from_pretrained(pretraining).eval().to(self.model.device)
        self.num_frames = num_frames
        self.max_new_tokens = max_new_tokens
        self.output_dir = Path(tempfile.mkdtemp(prefix="spa3_app_"))

    def frames(self, paths: list[str]) -> list:
        paths = [os.fspath(p) for p in paths]
        videos = [p for p in paths if p.lower().endswith(VIDEO_EXTENSIONS)]
        images = [p for p in paths if p.lower().endswith(FRAME_EXTENSIONS)]
        if len(videos) + len(images) != len(paths):
            unknown = [Path(p).name for p in paths if p not in videos and p not in images]
            raise ValueError(f"unsupported file type: {', '.join(unknown)} (upload one video or images)")
        if videos and (images or len(videos) > 1):
            raise ValueError("upload either one video or a set of images, not both")
        check_upload(paths, self.limits, self.num_frames)
        return load_frames(video=videos[0], num_frames=self.num_frames) if videos else load_frames(images=images)

    def picture(self, frames: list) -> tuple[Path, str | None]:
        """(PNG, note): the predicted vs target fields with a pretraining checkpoint, else (or when that checkpoint
        cannot compare on uploads, e.g. one pretrained on rendered targets) the encoder's tokens, with the reason."""
        size = self.processor.geometry_size
        views = scene_views(frames, size)  # (1, V, 3, H, W)
        out = self.output_dir / f"field_{len(list(self.output_dir.iterdir()))}.png"
        note = None
        if self.pretraining is not None and len(frames) >= 2:
            try:
                result = predict_fields(self.pretraining, views, default_targets(len(frames), self.pretraining.config.mask_ratio))
            except ValueError as error:
                note = f"feature fields not drawn: {error}; showing the encoder tokens instead"
            else:
                held_out = result["held_out"]
                fields_figure(result["fields"], out, images=views[0, held_out], grid_hw=result["grid_hw"],
                              view_labels=[f"view {i} (held out)" for i in held_out],
                              title="Spa3R predicted vs target feature fields of held-out views (PCA fitted on each target)")
                return out, None
        encoder = self.model.model.geometry_encoder
        patch = encoder.config.vggt_config.patch_size
        with torch.inference_mode():
            tokens = encoder(pixel_values=views.to(encoder.device, encoder.dtype)).last_hidden_state
        patches = tokens[0, encoder.config.num_queries :].float().cpu()  # (V·h·w, D)
        grid = (views.shape[-2] // patch, views.shape[-1] // patch)
        field_figure(patches.view(len(frames), grid[0] * grid[1], -1), out, images=views[0], grid_hw=grid,
                     row_title="Spa3R tokens", title="Spa3R encoder tokens at each view's patches (PCA to RGB, shared)")
        return out, note

    def run(self, files, question: str):
        """(answer, picture path); a bad upload's message goes in the answer box, with no picture. The answer is
        kept when only the picture fails: the picture's error is shown after it in the answer box."""
        if not files:
            return "Error: upload a video or some images first.", None
        try:
            frames = self.frames([getattr(f, "name", f) for f in files])
            text = answer(self.model, self.processor, frames, question, self.max_new_tokens)
        except ValueError as error:
            return f"Error: {error}", None
        try:
            path, note = self.picture(frames)
        except Exception as error:  # the answer is already computed: never lose it to the picture
            return f"{text}\n\n[picture failed: {type(error).__name__}: {error}]", None
        return (text if note is None else f"{text}\n\n[{note}]"), str(path)


def build_demo(app: Spa3App):
    import gradio as gr

    with gr.Blocks(title="Spa3-VLM") as demo:
        gr.Markdown(
            "# Spa3-VLM\nUpload a video (frames are sampled uniformly) or images of one scene, ask a spatial question. "
            "The picture shows the Spa3R encoder's tokens at every view's patches (PCA to RGB), or, with a pretraining "
            "checkpoint, its predicted feature fields of held-out views."
        )
        with gr.Row():
            with gr.Column():
                files = gr.File(label="Video or images", file_count="multiple", elem_id="files",
                                file_types=list(VIDEO_EXTENSIONS + FRAME_EXTENSIONS))
                question = gr.Textbox(label="Question", elem_id="question", placeholder="How many chairs are in the room?")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer_box = gr.Textbox(label="Answer", elem_id="answer", interactive=False)
                picture = gr.Image(label="Spa3R features", elem_id="picture", type="filepath")
        ask.click(app.run, inputs=[files, question], outputs=[answer_box, picture])
    return demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Spa3-VLM Gradio app")
    parser.add_argument("--model", required=True, help="Spa3-VLM checkpoint directory or Hub id")
    parser.add_argument("--pretraining", help="optional Spa3RForPretraining checkpoint: draw predicted feature fields")
    parser.add_argument("--num-frames", type=int, default=32, help="frames sampled from a video (default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    defaults = UploadLimits()
    parser.add_argument("--max-files", type=int, default=defaults.max_files, help="files per question")
    parser.add_argument("--max-mib", type=float, default=defaults.max_bytes / 2**20, help="MiB uploaded per question")
    parser.add_argument("--max-megapixels", type=float, default=defaults.max_pixels / 1e6,
                        help="megapixels per question (images, or a video's sampled frames)")
    args = parser.parse_args(argv)
    limits = UploadLimits(args.max_files, int(args.max_mib * 2**20), int(args.max_megapixels * 1e6))
    app = Spa3App(args.model, args.pretraining, args.num_frames, args.max_new_tokens, args.device, limits)
    build_demo(app).launch(server_name=args.host, server_port=args.port, show_error=True, max_file_size=limits.max_bytes)


if __name__ == "__main__":
    main()
