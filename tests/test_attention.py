"""Attention routing: VGGT / Spa3R run SDPA (flash requests served by it, eager refused), and a Spa3-VLM sends one
requested implementation to Qwen while its Spa3R encoder keeps SDPA (or each part its own, in the dict form)."""

import pytest
import torch
from transformers import AutoModel, Qwen2_5_VLConfig

from modeling_spa3r import Spa3RModel, Spa3VLMConfig, Spa3VLMForConditionalGeneration, VGGTModel

from .fixtures_vlm import random_picture, tiny_vlm_spa3r_config


@pytest.fixture(scope="module")
def spa3r_dir(tmp_path_factory):
    from .fixtures_spa3r import tiny_spa3r_config

    directory = tmp_path_factory.mktemp("spa3r")
    Spa3RModel(tiny_spa3r_config()).eval().save_pretrained(directory)
    return directory


def test_spa3r_default_is_sdpa_and_flash_requests_are_served_by_sdpa(spa3r_dir, images):
    default = Spa3RModel.from_pretrained(spa3r_dir).eval()
    flash = AutoModel.from_pretrained(spa3r_dir, attn_implementation="flash_attention_2").eval()
    assert default.config._attn_implementation == flash.config._attn_implementation == "sdpa"
    assert flash.config.vggt_config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert torch.equal(flash(images).latents, default(images).latents)


@pytest.mark.parametrize("model_class", [Spa3RModel, VGGTModel])
@pytest.mark.parametrize("requested", ["eager", "flex_attention"])
def test_other_implementations_are_refused_with_the_supported_list(spa3r_dir, model_class, requested, vggt_config):
    with pytest.raises(ValueError, match=rf"{model_class.__name__} supports attn_implementation \['sdpa'\].*not '{requested}'"):
        if model_class is Spa3RModel:
            Spa3RModel.from_pretrained(spa3r_dir, attn_implementation=requested)
        else:
            vggt_config._attn_implementation = requested
            VGGTModel(vggt_config)


def _vlm_config(**kwargs):
    return Spa3VLMConfig.from_qwen_config(Qwen2_5_VLConfig(), geometry_config=tiny_vlm_spa3r_config(), **kwargs)


def test_one_string_goes_to_qwen_and_spa3r_keeps_sdpa():
    config = _vlm_config(attn_implementation="flash_attention_2")
    assert config.text_config._attn_implementation == config.vision_config._attn_implementation == "flash_attention_2"
    assert config.geometry_config._attn_implementation == config.geometry_config.vggt_config._attn_implementation == "sdpa"
    config._attn_implementation = {"text_config": "flash_attention_2", "vision_config": "sdpa", "geometry_config": "sdpa"}
    assert (config.text_config._attn_implementation, config.vision_config._attn_implementation) == ("flash_attention_2", "sdpa")
    assert config.geometry_config._attn_implementation == "sdpa"


def test_vlm_eager_string_and_dict_forms(spa3_vlm_dir, spa3_vlm_processor):
    inputs = spa3_vlm_processor(images=[random_picture(0), random_picture(1)], text="How many chairs?", return_tensors="pt")
    reference = Spa3VLMForConditionalGeneration.from_pretrained(spa3_vlm_dir).eval()
    eager = Spa3VLMForConditionalGeneration.from_pretrained(spa3_vlm_dir, attn_implementation="eager").eval()
    assert eager.config.text_config._attn_implementation == "eager"
    assert eager.config.geometry_config._attn_implementation == "sdpa"
    assert eager.model.geometry_encoder.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(eager(**inputs).logits, reference(**inputs).logits, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"Spa3RModel supports attn_implementation \['sdpa'\]"):
        Spa3VLMForConditionalGeneration.from_pretrained(
            spa3_vlm_dir, attn_implementation={"text_config": "sdpa", "vision_config": "sdpa", "geometry_config": "eager"}
        )
