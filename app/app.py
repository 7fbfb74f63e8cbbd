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
from pathlib import Path

import torch

from modeling_spa3r.inference import answer, load_frames, load_vlm, scene_views
from modeling_spa3r.processing_spa3_vlm import FRAME_EXTENSIONS
from modeling_spa3r.visualize import default_targets, field_figure, fields_figure, predict_fields

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


class Spa3App:
    """Model, processor and the optional pretraining model; `run` answers one upload + question."""

    def __init__(self, model: str, pretraining: str | None = None, num_frames: int = 32, max_new_tokens: int = 128,
                 device: str | None = None):
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
        return load_frames(video=videos[0], num_frames=self.num_frames) if videos else load_frames(images=images)

    def picture(self, frames: list) -> Path:
        size = self.processor.geometry_size
        views = scene_views(frames, size)  # (1, V, 3, H, W)
        out = self.output_dir / f"field_{len(list(self.output_dir.iterdir()))}.png"
        if self.pretraining is not None and len(frames) >= 2:
            result = predict_fields(self.pretraining, views, default_targets(len(frames), self.pretraining.config.mask_ratio))
            held_out = result["held_out"]
            fields_figure(result["fields"], out, images=views[0, held_out], grid_hw=result["grid_hw"],
                          view_labels=[f"view {i} (held out)" for i in held_out],
                          title="Spa3R predicted vs target feature fields of held-out views (one shared PCA per field)")
            return out
        encoder = self.model.model.geometry_encoder
        patch = encoder.config.vggt_config.patch_size
        with torch.inference_mode():
            tokens = encoder(pixel_values=views.to(encoder.device, encoder.dtype)).last_hidden_state
        patches = tokens[0, encoder.config.num_queries :].float().cpu()  # (V·h·w, D)
        grid = (views.shape[-2] // patch, views.shape[-1] // patch)
        field_figure(patches.view(len(frames), grid[0] * grid[1], -1), out, images=views[0], grid_hw=grid,
                     row_title="Spa3R tokens", title="Spa3R encoder tokens at each view's patches (PCA to RGB, shared)")
        return out

    def run(self, files, question: str):
        import gradio as gr

        if not files:
            raise gr.Error("Upload a video or some images first.")
        try:
            frames = self.frames([getattr(f, "name", f) for f in files])
            text = answer(self.model, self.processor, frames, question, self.max_new_tokens)
            return text, str(self.picture(frames))
        except ValueError as error:
            raise gr.Error(str(error)) from error


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
    args = parser.parse_args(argv)
    app = Spa3App(args.model, args.pretraining, args.num_frames, args.max_new_tokens, args.device)
    build_demo(app).launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
