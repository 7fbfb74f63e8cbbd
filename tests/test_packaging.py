"""Installs that work: the wheel carries configuration/ as package data, and an installed copy finds its presets,
model configs and accelerate/DeepSpeed files from any directory."""

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from modeling_spa3r.training.presets import configuration_dir, load_preset, preset_names

REPO = Path(__file__).resolve().parents[1]
CHECK_PRESETS = """
import pathlib, sys
import modeling_spa3r
from modeling_spa3r.training.presets import configuration_dir, load_preset, preset_names
package = pathlib.Path(modeling_spa3r.__file__).parent
assert pathlib.Path(sys.prefix) in package.parents, (package, sys.prefix)
assert configuration_dir() == package / "configuration", configuration_dir()
preset = load_preset("spa3r-synthetic-tiny")
assert pathlib.Path(preset["config_name"]).is_file() and configuration_dir() in pathlib.Path(preset["config_name"]).parents
print(" ".join(preset_names()))
"""


def test_every_preset_resolves_and_every_accelerate_yaml_is_self_contained():
    folder = configuration_dir()
    assert {"spa3r-base", "spa3r-synthetic-tiny", "spa3-vlm-sft", "spa3-vlm-sft-cpu"} <= set(preset_names())
    for name in preset_names():
        values = load_preset(name)
        for key in ("config_name", "deepspeed"):
            if key in values:
                assert Path(values[key]).is_file(), (name, key, values[key])
    for path in sorted((folder / "accelerate").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        # accelerate resolves file paths against the current directory: the YAMLs must not name any
        assert "deepspeed_config_file" not in config.get("deepspeed_config", {}), path.name


def test_wheel_installed_in_a_fresh_venv_finds_presets_outside_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("spa3r-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"modeling_spa3r/configuration/{p.relative_to(REPO / 'configuration')}" for p in (REPO / "configuration").rglob("*") if p.is_file()}
    assert shipped and shipped <= names
    # a fresh venv that reuses this interpreter's torch / transformers, with the wheel (not the checkout) installed
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True)
    python, spa3r = tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin" / "spa3r"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    help_text = subprocess.run([spa3r, "pretrain", "--preset", "spa3r-synthetic-tiny", "--help"], cwd=outside,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert help_text.splitlines()[0] == "usage: spa3r [--preset NAME|PATH] [--ARGUMENT VALUE ...]"
    checked = subprocess.run([python, "-c", CHECK_PRESETS], cwd=outside, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert checked.stdout.split() == preset_names()
    located = subprocess.run([spa3r, "config", "accelerate/8gpu_zero2.yaml"], cwd=outside, capture_output=True, text=True, check=True)
    assert Path(located.stdout.strip()).is_file() and str(tmp_path / "venv") in located.stdout
