"""Every ```python snippet of the README, and its `spa3r ask/encode/visualize` lines, run in fresh processes against
tiny local checkpoints. Only the model paths are substituted; the media the snippets name (f0.jpg…, room.mp4) are
written to the working folder.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .fixtures_apps import smooth_picture
from .fixtures_qwen3 import save_tiny_qwen3_base
from .fixtures_vlm import write_video

README = Path(__file__).resolve().parent.parent / "README.md"
PYTHON_SNIPPETS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
CLI_LINES = [
    line.split("#")[0].strip()
    for line in README.read_text().splitlines()
    if re.match(r"^spa3r (ask|encode|visualize) path/to/", line)
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, spa3r_pretraining_dir, spa3_vlm_dir):
    folder = tmp_path_factory.mktemp("readme")
    for index in range(4):
        smooth_picture(index).save(folder / f"f{index}.jpg")
    write_video(folder / "room.mp4", num_frames=8)
    paths = {
        "path/to/spa3r-hf": spa3r_pretraining_dir,  # AutoModel loads the Spa3RModel inside a pretraining checkpoint
        "path/to/spa3r-pretraining": spa3r_pretraining_dir,
        "path/to/spa3-vlm-hf": spa3_vlm_dir,
        "path/to/qwen3-vl": save_tiny_qwen3_base(folder / "qwen3-vl"),  # a stock tiny Qwen3-VL folder
    }
    return folder, paths


def substitute(text: str, paths: dict) -> str:
    for placeholder, path in paths.items():
        text = text.replace(placeholder, str(path))
    assert "path/to/" not in text, f"unknown placeholder path in:\n{text}"
    return text


def test_readme_has_snippets():
    assert len(PYTHON_SNIPPETS) >= 4 and len(CLI_LINES) >= 4


@pytest.mark.parametrize("index", range(len(PYTHON_SNIPPETS)))
def test_python_snippet_runs(index, workdir):
    folder, paths = workdir
    code = substitute(PYTHON_SNIPPETS[index], paths)
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, f"snippet {index} failed:\n{code}\n{result.stderr[-3000:]}"
    assert result.stdout.strip(), f"snippet {index} printed nothing"


@pytest.mark.parametrize("line", CLI_LINES)
def test_cli_line_runs(line, workdir):
    folder, paths = workdir
    args = shlex.split(substitute(line, paths))
    result = subprocess.run([sys.executable, "-m", "modeling_spa3r.cli", *args[1:]], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
    if "--out" in args:
        output = folder / args[args.index("--out") + 1]
        assert output.stat().st_size > 0
        if output.suffix == ".safetensors":
            assert load_file(str(output))["latents"].dtype == torch.float32
    else:
        assert result.stdout.strip()


def test_every_package_name_the_readme_mentions_exists():
    """`modeling_spa3r.<module>.<name>` references in the README prose resolve (one named a function that never
    existed)."""
    import importlib

    names = sorted(set(re.findall(r"`(modeling_spa3r(?:\.\w+)+)", README.read_text())))
    assert "modeling_spa3r.report.input_control" in names
    unresolved = []
    for name in names:
        parts = name.split(".")
        # the longest prefix that is a module (found without importing it: a plugin may need an optional extra), then
        # attributes of it
        cut = 1
        while cut < len(parts) and _is_module(".".join(parts[: cut + 1])):
            cut += 1
        target = importlib.import_module(".".join(parts[:cut])) if cut < len(parts) else True
        for attribute in parts[cut:]:
            target = getattr(target, attribute, None)
        if target is None:
            unresolved.append(name)
    assert not unresolved, f"README names that do not exist: {unresolved}"


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False
