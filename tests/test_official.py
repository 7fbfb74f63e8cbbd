"""The authors' release layout (`spa3r.ckpt` + `spa3_vlm/`, as in hustvl/Spa3-VLM), built locally at tiny size from
the reference sets: each part loads in one call, and no Qwen or Auto class loads the VLM silently as plain Qwen."""

import json
import shutil

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForPreTraining,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
)

from modeling_spa3r import Spa3RForPretraining, Spa3RModel, Spa3VLMForConditionalGeneration
from modeling_spa3r.convert import spa3r_config_from_reference

from .parity import PARITY_DIR, ReferenceSet


@pytest.fixture(scope="module")
def set_a():
    return ReferenceSet("spa3r_tiny_a")


@pytest.fixture(scope="module")
def release(tmp_path_factory, set_a):
    """A folder laid out like hustvl/Spa3-VLM: the Lightning spa3r.ckpt at the root, the VLM in spa3_vlm/."""
    root = tmp_path_factory.mktemp("Spa3-VLM")
    state_dict = {k: v for k, v in set_a.tensors.items() if k.startswith("model.")}
    torch.save({"state_dict": state_dict, "epoch": 3, "global_step": 10}, root / "spa3r.ckpt")
    shutil.copytree(PARITY_DIR / "spa3_vlm_tiny_e_hf", root / "spa3_vlm")
    return root


def test_spa3r_from_the_release_folder_converts_in_memory(release, set_a):
    config = spa3r_config_from_reference(set_a.config)
    model = Spa3RModel.from_pretrained(release, config=config)
    assert model.conversion_report.ok and len(model.conversion_report.loaded) == len(model.state_dict())
    assert not model.training
    with torch.no_grad():
        set_a.check("outputs.spa3r.predict.latents", model(set_a.images()).latents)
    # the same through AutoModel, the .ckpt file itself, and `filename=`
    auto = AutoModel.from_pretrained(release, config=config)
    assert type(auto) is Spa3RModel
    renamed = release.parent / "renamed"
    renamed.mkdir(exist_ok=True)
    shutil.copy(release / "spa3r.ckpt", renamed / "last.ckpt")
    for loaded in (Spa3RModel.from_pretrained(release / "spa3r.ckpt", config=config),
                   Spa3RModel.from_pretrained(renamed, filename="last.ckpt", config=config)):
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_pretraining_model_from_the_release_and_strictness(release, set_a):
    config = spa3r_config_from_reference(set_a.config)
    model = AutoModelForPreTraining.from_pretrained(release, config=config, strict=False)
    assert type(model) is Spa3RForPretraining
    assert "spa3r.query_embed.weight" in model.conversion_report.loaded
    with pytest.raises(ValueError, match="checkpoint does not match the model"):
        Spa3RModel.from_pretrained(release)  # the released-size config does not fit the tiny checkpoint
    with pytest.raises(ValueError, match="unsupported arguments .*device_map"):
        Spa3RModel.from_pretrained(release, config=config, device_map="auto")


def test_saved_folder_still_loads_the_transformers_way(release, set_a, tmp_path):
    model = Spa3RModel.from_pretrained(release, config=spa3r_config_from_reference(set_a.config))
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "spa3r.ckpt").write_bytes(b"not read: config.json wins")
    reloaded = Spa3RModel.from_pretrained(tmp_path / "hf")
    assert not hasattr(reloaded, "conversion_report")
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    "load",
    [
        lambda root: AutoModelForImageTextToText.from_pretrained(root / "spa3_vlm"),
        lambda root: AutoModel.from_pretrained(root, subfolder="spa3_vlm"),
        lambda root: Qwen2_5_VLForConditionalGeneration.from_pretrained(root, subfolder="spa3_vlm"),
        lambda root: Qwen2_5_VLModel.from_pretrained(root / "spa3_vlm"),
    ],
    ids=["AutoModelForImageTextToText", "AutoModel", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel"],
)
def test_qwen_and_auto_classes_refuse_the_official_vlm(release, load):
    with pytest.raises(ValueError, match=r"official Spa3-VLM checkpoint.*Spa3VLMForConditionalGeneration\.from_pretrained"):
        load(release)


def test_official_vlm_converts_with_its_own_class(release, tmp_path):
    meta = json.loads((PARITY_DIR / "spa3_vlm_tiny_e.json").read_text())
    geometry_config = spa3r_config_from_reference(meta["geometry_encoder_spec"])
    model = Spa3VLMForConditionalGeneration.from_pretrained(release, subfolder="spa3_vlm", geometry_config=geometry_config)
    assert model.conversion_report["unmapped"] == model.conversion_report["missing"] == []
    model.save_pretrained(tmp_path / "converted")
    # a converted folder, and a plain Qwen2.5-VL (use_geometry_encoder false), load as before
    assert type(AutoModelForImageTextToText.from_pretrained(tmp_path / "converted")) is Spa3VLMForConditionalGeneration
    plain = json.loads((release / "spa3_vlm" / "config.json").read_text())
    plain["use_geometry_encoder"] = False
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps(plain))
    qwen = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_pretrained(tmp_path / "plain"))
    qwen.save_pretrained(tmp_path / "plain")
    assert type(AutoModelForImageTextToText.from_pretrained(tmp_path / "plain")) is Qwen2_5_VLForConditionalGeneration
