"""The stock transformers `image-text-to-text` pipeline drives a Spa3-VLM checkpoint, geometry included."""

import pytest
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
from transformers.pipelines import ImageTextToTextPipeline

import modeling_spa3r  # noqa: F401  (registers the Auto classes)
from modeling_spa3r.inference import answer, build_messages

QUESTION = "Which object is closest to the door?"
PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def frames(scene_pictures):
    return [Image.open(p).convert("RGB") for p in scene_pictures[:3]]


@pytest.fixture(scope="module")
def pipe(spa3_vlm_dir):
    return pipeline("image-text-to-text", model=str(spa3_vlm_dir))


@pytest.fixture(scope="module")
def expected(spa3_vlm_dir, frames):
    model = AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).eval()
    return answer(model, AutoProcessor.from_pretrained(spa3_vlm_dir), frames, QUESTION, max_new_tokens=6)


def test_pipeline_loads_spa3_vlm(pipe):
    assert type(pipe) is ImageTextToTextPipeline
    assert type(pipe.model).__name__ == "Spa3VLMForConditionalGeneration"
    assert type(pipe.processor).__name__ == "Spa3VLMProcessor"


def test_pipeline_chat_equals_ask(pipe, frames, expected):
    out = pipe(text=build_messages(frames, QUESTION), max_new_tokens=6, return_full_text=False)
    assert out[0]["generated_text"].strip() == expected


def test_pipeline_images_and_text(pipe, spa3_vlm_dir, frames):
    """`pipe(images=frames, text=...)`: the text carries one image placeholder per frame (as for Qwen2.5-VL)."""
    text = PLACEHOLDER * len(frames) + QUESTION
    out = pipe(images=frames, text=text, max_new_tokens=6, return_full_text=False)
    model = AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).eval()
    processor = AutoProcessor.from_pretrained(spa3_vlm_dir)
    inputs = processor(images=frames, text=text, return_tensors="pt")
    assert inputs["geometry_pixel_values"].shape[0] == 3
    generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    reference = processor.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert out[0]["generated_text"] == reference


def test_pipeline_bare_question_puts_the_images_first(pipe, frames):
    """`pipe(images=frames, text=question)` with no placeholder: one image block per frame is put before the text."""
    bare = pipe(images=frames, text=QUESTION, max_new_tokens=6, return_full_text=False)
    explicit = pipe(images=frames, text=PLACEHOLDER * len(frames) + QUESTION, max_new_tokens=6, return_full_text=False)
    assert bare[0]["generated_text"] == explicit[0]["generated_text"]


def test_pipeline_remote_code_in_fresh_process(spa3_vlm_dir, tmp_path, frames, expected):
    """From the saved folder alone (copied module files), as a Hub user would run it."""
    import json
    import subprocess
    import sys

    for index, frame in enumerate(frames):
        frame.save(tmp_path / f"{index}.png")
    script = f"""
import json
from PIL import Image
from transformers import pipeline
pipe = pipeline("image-text-to-text", model={str(spa3_vlm_dir)!r}, trust_remote_code=True)
frames = [Image.open({str(tmp_path)!r} + f"/{{i}}.png") for i in range(3)]
messages = [{{"role": "user", "content": [*({{"type": "image", "image": f}} for f in frames), {{"type": "text", "text": {QUESTION!r}}}]}}]
out = pipe(text=messages, max_new_tokens=6, return_full_text=False)
print(json.dumps([type(pipe.model).__module__, out[0]["generated_text"].strip()]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    module, generated = json.loads(result.stdout.strip().splitlines()[-1])
    assert module.startswith("transformers_modules.") and generated == expected
