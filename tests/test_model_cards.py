"""Model cards: Hub metadata, and every ```python snippet runs (fresh process) against a tiny local checkpoint.

Snippets name Hub ids; the test swaps only the quoted id string for a tiny local folder and checks what they print
or write against this package's own inference paths.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from modeling_spa3r.inference import load_frames

from .fixtures_apps import smooth_picture
from .fixtures_vlm import write_video

CARDS = Path(__file__).resolve().parent.parent / "model_cards"
QUESTION = "How many chairs are in this room?"
VIDEO_QUESTION = "What is the length of the longest wall, in metres?"


def front_matter(path: Path) -> dict:
    text = path.read_text()
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, f"{path.name} has no YAML front matter"
    return yaml.safe_load(match.group(1))


def python_snippets(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


@pytest.mark.parametrize(
    "card, pipeline_tag, license_",
    [("spa3r.md", "image-feature-extraction", "cc-by-nc-4.0"), ("spa3-vlm.md", "image-text-to-text", "other")],
)
def test_card_metadata(card, pipeline_tag, license_):
    meta = front_matter(CARDS / card)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == pipeline_tag
    assert meta["license"] == license_
    assert meta["base_model"] and meta["datasets"] and meta["widget"]
    assert {"custom_code", "spatial-reasoning", "3d"} <= set(meta["tags"])
    text = (CARDS / card).read_text()
    assert "CC BY-NC 4.0" in text and "DINOv3 License" in text and "non-commercial" in text.lower()
    for result in meta["model-index"][0]["results"]:
        assert result["dataset"]["name"] == "VSI-Bench"
        for metric in result["metrics"]:
            assert "reported by the authors" in metric["name"]
            # an empty value is visibly marked as a placeholder, a filled one no longer is
            assert (metric["value"] is None) == ("PLACEHOLDER" in metric["name"])
    if card == "spa3-vlm.md":
        assert "conversational" in meta["tags"] and "Qwen Research License" in text
        assert "python -m modeling_spa3r.convert_spa3_vlm --input" in text
    else:
        assert "python -m modeling_spa3r.convert spa3r --checkpoint spa3r.ckpt" in text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Current directory of the snippets: frame_0..3.jpg and room.mp4."""
    directory = tmp_path_factory.mktemp("card_snippets")
    for index in range(4):
        smooth_picture(index).save(directory / f"frame_{index}.jpg", quality=95)
    write_video(directory / "room.mp4", num_frames=8, fps=4)
    return directory


def _run_all(snippets: list[tuple[str, str]], workdir: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run the (name, source) snippets in parallel fresh interpreters."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", source], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, source in snippets
    }
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        assert process.returncode == 0, f"{name} failed:\n{err[-3000:]}"
    return results


def _substitute(source: str, ids: dict[str, Path]) -> str:
    for hub_id, local in ids.items():
        source = source.replace(f'"{hub_id}"', repr(str(local)))
    return source


def test_card_snippets_run(spa3_vlm_dir, spa3r_pretraining_dir, workdir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from modeling_spa3r.inference import answer

    ids = {"hustvl/spa3-vlm": spa3_vlm_dir, "hustvl/spa3r": spa3r_pretraining_dir, "hustvl/Spa3-VLM": spa3r_pretraining_dir}
    vlm_snippets, spa3r_snippets = python_snippets(CARDS / "spa3-vlm.md"), python_snippets(CARDS / "spa3r.md")
    assert len(vlm_snippets) == 2 and len(spa3r_snippets) == 2
    for snippet in vlm_snippets + spa3r_snippets:  # only the id string differs from what the Hub user runs
        assert _substitute(snippet, ids) != snippet
    snippets = [("vlm-pipeline", vlm_snippets[0]), ("vlm-video", vlm_snippets[1]),
                ("spa3r-latents", spa3r_snippets[0]), ("spa3r-fields", spa3r_snippets[1])]
    results = _run_all([(name, _substitute(source, ids)) for name, source in snippets], workdir)

    model = AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).eval()
    processor = AutoProcessor.from_pretrained(spa3_vlm_dir)
    frames = [Image.open(workdir / f"frame_{i}.jpg").convert("RGB") for i in range(4)]
    assert results["vlm-pipeline"].stdout.strip() == answer(model, processor, frames, QUESTION, max_new_tokens=32)
    video_frames = load_frames(video=workdir / "room.mp4", num_frames=processor.num_frames)
    assert results["vlm-video"].stdout.strip() == answer(model, processor, video_frames, VIDEO_QUESTION, max_new_tokens=32)
    assert results["spa3r-latents"].stdout.strip() == "torch.Size([1, 8, 32])"  # (1, Q, D) of the tiny model
    with Image.open(workdir / "fields.png") as png:
        assert png.format == "PNG"


@pytest.mark.parametrize("document", [CARDS / "spa3r.md", CARDS / "spa3-vlm.md", CARDS.parent / "README.md"])
def test_commands_and_ids_that_exist(document):
    """`hf` (not huggingface-cli), `lmms-eval` (the console script), the authors' hustvl/Spa3-VLM release with its
    download line, the design's ids for the converted repos, and no `pip install spa3r` (there is no PyPI package)."""
    text = document.read_text()
    assert "huggingface-cli" not in text and "lmms_eval --" not in text and "pip install spa3r" not in text
    assert not re.search(r"\bspa3r/Spa3", text)
    assert re.search(r"^hf download hustvl/Spa3-VLM", text, re.M)
    assert "hustvl/spa3r" in text
    assert 'subfolder="spa3_vlm"' in text or document.name == "spa3r.md"
