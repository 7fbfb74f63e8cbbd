"""The remote-code journey with only torch + transformers: a fresh process in which `modeling_spa3r` and `av` cannot be
imported (as on a machine that never installed them) loads the processor and model with trust_remote_code=True,
answers about images, and gets a clear message for a video file."""

import subprocess
import sys
import textwrap

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from .fixtures_vlm import random_picture, write_video

BLOCK_IMPORTS = """
import sys

BLOCKED = ("modeling_spa3r", "av")


class NotInstalled:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None  # as if not installed: importlib.util.find_spec("av") is None, `import av` fails
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [NotInstalled(finder) if hasattr(finder, "find_spec") else finder for finder in sys.meta_path]
"""


def test_remote_code_without_the_package_or_av(spa3_vlm_dir, tmp_path):
    frames = [random_picture(seed) for seed in range(3)]
    for index, frame in enumerate(frames):
        frame.save(tmp_path / f"frame_{index}.png")
    write_video(tmp_path / "room.mp4", num_frames=6)
    processor = AutoProcessor.from_pretrained(spa3_vlm_dir)
    model = AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).eval()
    inputs = processor(images=frames, text="How many chairs are in this room?", return_tensors="pt")
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0].tolist()

    script = BLOCK_IMPORTS + textwrap.dedent(
        f"""
        import importlib.util
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor

        assert importlib.util.find_spec("av") is None
        directory = {str(spa3_vlm_dir)!r}
        processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        frames = [Image.open(f"frame_{{i}}.png") for i in range(3)]
        inputs = processor(images=frames, text="How many chairs are in this room?", return_tensors="pt")
        print(model.generate(**inputs, max_new_tokens=5, do_sample=False)[0].tolist())
        try:
            processor(videos=["room.mp4"], text="<|vision_start|><|video_pad|><|vision_end|>Count the chairs.")
        except ImportError as error:
            print("video:", error)
        assert not [name for name in sys.modules if name.split(".")[0] in ("modeling_spa3r", "av")]
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    tokens, video_line = result.stdout.strip().splitlines()[-2:]
    assert tokens == str(expected)
    assert video_line.startswith("video: decoding video files needs PyAV: `pip install av`")
