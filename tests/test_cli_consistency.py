"""The tools agree: `spa3r convert --help` names every kind, every kind takes --input/--output (old --checkpoint/--out
kept), and the training help lists --preset (with the shipped names) before the Trainer's flags."""

import json
import re

import pytest
import torch

from modeling_spa3r.cli import main as spa3r
from modeling_spa3r.convert import spa3r_config_from_reference

from .parity import PARITY_DIR, ReferenceSet


def test_convert_help_lists_every_kind(capsys):
    with pytest.raises(SystemExit) as exit_:
        spa3r(["convert", "--help"])
    assert exit_.value.code == 0
    assert "{spa3r,vggt,vlm}" in capsys.readouterr().out


def test_convert_kinds_take_input_output_and_the_old_names(tmp_path):
    set_a = ReferenceSet("spa3r_tiny_a")
    torch.save({"state_dict": {k: v for k, v in set_a.tensors.items() if k.startswith("model.")}}, tmp_path / "spa3r.ckpt")
    spa3r_config_from_reference(set_a.config).to_json_file(tmp_path / "config.json")
    common = ["--config", str(tmp_path / "config.json")]
    assert spa3r(["convert", "spa3r", "--input", str(tmp_path / "spa3r.ckpt"), "--output", str(tmp_path / "new"), *common]) == 0
    assert spa3r(["convert", "spa3r", "--checkpoint", str(tmp_path / "spa3r.ckpt"), "--out", str(tmp_path / "old"), *common]) == 0
    assert (tmp_path / "new" / "model.safetensors").read_bytes() == (tmp_path / "old" / "model.safetensors").read_bytes()
    reference = ["--reference-json", str(PARITY_DIR / "spa3_vlm_tiny_e.json")]
    source = str(PARITY_DIR / "spa3_vlm_tiny_e_hf")
    assert spa3r(["convert", "vlm", "--checkpoint", source, "--out", str(tmp_path / "vlm"), *reference]) == 0
    assert json.loads((tmp_path / "vlm" / "config.json").read_text())["model_type"] == "spa3_vlm"


@pytest.mark.parametrize("command", ["pretrain", "sft"])
def test_training_help_shows_preset_first(command, capsys):
    with pytest.raises(SystemExit):
        spa3r([command, "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "[--preset NAME|PATH]" in out.splitlines()[0]
    options = re.findall(r"^  (--?[\w-]+)", out, re.M)
    assert options[:2] == ["-h", "--preset"]
    assert "spa3r-synthetic-tiny" in out and "spa3-vlm-sft-cpu" in out
