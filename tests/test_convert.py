import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel, DINOv3ViTConfig, DINOv3ViTModel

from modeling_spa3r import Spa3RModel, VGGTModel
from modeling_spa3r.convert import (
    convert_spa3r_checkpoint,
    convert_spa3r_state_dict,
    dinov3_hub_to_hf,
    main,
    spa3r_config_from_reference,
    vggt_to_spa3r_backbone,
)

from .fixtures_spa3r import tiny_spa3r_config, tiny_vggt_config
from .parity import ReferenceSet


@pytest.fixture(scope="module")
def set_a():
    return ReferenceSet("spa3r_tiny_a")


def test_official_lightning_checkpoint_converts_and_reproduces_latents(set_a, tmp_path):
    """A tiny official `spa3r.ckpt` (Lightning layout, built from a reference set) → our directory → same latents."""
    state_dict = {k: v for k, v in set_a.tensors.items() if k.startswith("model.")}
    torch.save({"state_dict": state_dict, "epoch": 3}, tmp_path / "spa3r.ckpt")
    spa3r_config_from_reference(set_a.config).to_json_file(tmp_path / "config.json")
    args = ["spa3r", "--checkpoint", str(tmp_path / "spa3r.ckpt"), "--config", str(tmp_path / "config.json")]
    assert main(args + ["--out", str(tmp_path / "hf")]) == 0
    model = AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(model) is Spa3RModel
    with torch.no_grad():
        latents = model(set_a.images()).latents
    set_a.check("outputs.spa3r.predict.latents", latents)

    assert main(args + ["--out", str(tmp_path / "pretraining"), "--pretraining", "--no-strict"]) == 0
    config = json.loads((tmp_path / "pretraining" / "config.json").read_text())
    assert config["architectures"] == ["Spa3RForPretraining"]


def test_converter_reports_problem_keys_by_name(set_a):
    model = Spa3RModel(spa3r_config_from_reference(set_a.config))
    state_dict = {k: v for k, v in set_a.tensors.items() if k.startswith("model.")}
    state_dict["model.encoder.extra.weight"] = torch.zeros(1)
    state_dict["model.projection.bias"] = torch.zeros(7)
    del state_dict["model.query_embed.weight"]
    state_dict["optimizer.step"] = torch.zeros(1)
    _, report = convert_spa3r_state_dict(state_dict, model)
    assert report.unexpected == ["optimizer.step", "encoder.extra.weight"]
    assert report.missing == ["query_embed.weight"]  # the mis-shaped key is reported as mismatched only
    assert report.mismatched == {"projection.bias": ((7,), (32,))}
    assert report.ignored["decoder.blocks.0.attn.qkv.weight"] == "pretraining-only module"
    with pytest.raises(ValueError, match="query_embed.weight") as error:
        report.raise_if_failed()
    assert "shape mismatch projection.bias" in str(error.value)


def test_vggt_1b_layout_into_spa3r_backbone_drops_global_qk_biases(tmp_path):
    vggt = VGGTModel(tiny_vggt_config(global_qk_norm="layernorm"))  # VGGT-1B layout: LayerNorm q/k norms
    official = {k: v.clone() for k, v in vggt.state_dict().items()}
    official["track_head.fc.weight"] = torch.zeros(2)
    backbone, dropped = vggt_to_spa3r_backbone(official)
    assert sorted(dropped) == sorted(
        [f"aggregator.global_blocks.{i}.attn.{n}_norm.bias" for i in range(2) for n in "qk"] + ["track_head.fc.weight"]
    )
    save_file(backbone, tmp_path / "vggt.safetensors")
    spa3r_only = {"model." + k: v for k, v in Spa3RModel(tiny_spa3r_config()).state_dict().items() if not k.startswith("aggregator.")}
    torch.save({"state_dict": spa3r_only}, tmp_path / "spa3r.ckpt")
    model, report = convert_spa3r_checkpoint(
        tmp_path / "spa3r.ckpt", config=tiny_spa3r_config(), vggt_checkpoint=tmp_path / "vggt.safetensors"
    )
    assert report.ok, report.summary()
    torch.testing.assert_close(
        model.aggregator.global_blocks[1].attn.q_norm.weight, official["aggregator.global_blocks.1.attn.q_norm.weight"]
    )
    assert isinstance(model.aggregator.global_blocks[0].attn.q_norm, torch.nn.RMSNorm)
    assert isinstance(model.aggregator.frame_blocks[0].attn.q_norm, torch.nn.LayerNorm)


def test_vggt_conversion_round_trip(tmp_path, images):
    vggt = VGGTModel(tiny_vggt_config()).eval()
    save_file({k: v.contiguous() for k, v in vggt.state_dict().items()}, tmp_path / "model.safetensors")
    tiny_vggt_config().to_json_file(tmp_path / "config.json")
    out_dir = tmp_path / "hf"
    assert main(["vggt", "--checkpoint", str(tmp_path / "model.safetensors"), "--config", str(tmp_path / "config.json"), "--out", str(out_dir)]) == 0
    reloaded = AutoModel.from_pretrained(out_dir).eval()
    with torch.no_grad():
        a, b = vggt(images), reloaded(images)
    torch.testing.assert_close(a.depth, b.depth, atol=0, rtol=0)
    torch.testing.assert_close(a.extrinsics, b.extrinsics, atol=0, rtol=0)


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        convert_spa3r_checkpoint(tmp_path / "nothing.ckpt", config=tiny_spa3r_config())


def test_dinov3_hub_keys_map_onto_transformers_model():
    config = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16, num_register_tokens=4)
    model = DINOv3ViTModel(config)
    dim = 32
    hub = {
        "cls_token": torch.randn(1, 1, dim),
        "mask_token": torch.randn(1, dim),
        "storage_tokens": torch.randn(1, 4, dim),
        "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16),
        "patch_embed.proj.bias": torch.randn(dim),
        "rope_embed.periods": torch.randn(4),
        "norm.weight": torch.randn(dim),
        "norm.bias": torch.randn(dim),
    }
    for i in range(2):
        hub.update(
            {
                f"blocks.{i}.norm1.weight": torch.randn(dim),
                f"blocks.{i}.norm1.bias": torch.randn(dim),
                f"blocks.{i}.attn.qkv.weight": torch.randn(3 * dim, dim),
                f"blocks.{i}.attn.qkv.bias": torch.randn(3 * dim),
                f"blocks.{i}.attn.qkv.bias_mask": torch.ones(3 * dim),
                f"blocks.{i}.attn.proj.weight": torch.randn(dim, dim),
                f"blocks.{i}.attn.proj.bias": torch.randn(dim),
                f"blocks.{i}.ls1.gamma": torch.randn(dim),
                f"blocks.{i}.norm2.weight": torch.randn(dim),
                f"blocks.{i}.norm2.bias": torch.randn(dim),
                f"blocks.{i}.mlp.fc1.weight": torch.randn(64, dim),
                f"blocks.{i}.mlp.fc1.bias": torch.randn(64),
                f"blocks.{i}.mlp.fc2.weight": torch.randn(dim, 64),
                f"blocks.{i}.mlp.fc2.bias": torch.randn(dim),
                f"blocks.{i}.ls2.gamma": torch.randn(dim),
            }
        )
    converted = dict(kv for key, tensor in hub.items() for kv in dinov3_hub_to_hf(key, tensor))
    target = model.state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    qkv = hub["blocks.1.attn.qkv.weight"]
    torch.testing.assert_close(converted["model.layer.1.attention.k_proj.weight"], qkv[dim : 2 * dim])
    torch.testing.assert_close(converted["model.layer.1.attention.v_proj.bias"], hub["blocks.1.attn.qkv.bias"][2 * dim :])
