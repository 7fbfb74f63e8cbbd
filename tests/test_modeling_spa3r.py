import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel

from modeling_spa3r import (
    Spa3RConfig,
    Spa3RForPretraining,
    Spa3RModel,
    VGGTConfig,
    VGGTModel,
)
from modeling_spa3r.modeling_spa3r import sample_view_mask

from .fixtures_spa3r import tiny_spa3r_config
from .parity import PARITY_DIR

VIEW_MASK = torch.tensor([[False, True, False, True], [False, False, True, True]])


def test_spa3r_model_round_trip_and_auto_model(spa3r_config, images, tmp_path):
    model = Spa3RModel(spa3r_config).eval()
    latents = model(images).latents
    assert latents.shape == (2, 8, 32)
    model.save_pretrained(tmp_path)
    for loader in (Spa3RModel, AutoModel):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert type(reloaded) is Spa3RModel
        torch.testing.assert_close(reloaded(images).latents, latents, atol=0, rtol=0)
    assert AutoConfig.from_pretrained(tmp_path).vggt_config.global_qk_norm == "rmsnorm"


def test_pretraining_round_trip_and_encoder_from_pretraining_dir(spa3r_config, images, tmp_path):
    model = Spa3RForPretraining(spa3r_config).eval()
    out = model(images, view_mask=VIEW_MASK)
    model.save_pretrained(tmp_path)
    reloaded = Spa3RForPretraining.from_pretrained(tmp_path).eval()
    again = reloaded(images, view_mask=VIEW_MASK)
    for name, value in out.losses.items():
        torch.testing.assert_close(again.losses[name], value, atol=0, rtol=0)
    encoder = Spa3RModel.from_pretrained(tmp_path).eval()  # the base model inside a pretraining checkpoint
    torch.testing.assert_close(encoder(images).latents, model.spa3r(images).latents, atol=0, rtol=0)


def test_teachers_frozen_and_left_out_of_training_checkpoints(images, tmp_path):
    model = Spa3RForPretraining(tiny_spa3r_config(save_teachers=False))
    teacher_keys = {f"{p}.{k}" for p, m in model.teachers().items() for k in m.state_dict()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert teacher_keys and not trainable & teacher_keys
    assert {"spa3r.projection.weight", "spa3r.query_embed.weight", "decoder.register_tokens"} <= trainable
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert not saved & teacher_keys
    assert "spa3r.encoder.norm.weight" in saved and "heads.geo.fc1.weight" in saved


def test_loss_terms_gradients_and_probe_detach(spa3r_config, images):
    model = Spa3RForPretraining(spa3r_config).train()
    out = model(images, view_mask=VIEW_MASK)
    assert set(out.losses) == {"geo/l1", "geo/cos", "sem/l1", "sem/cos", "depth_prob"}
    torch.testing.assert_close(out.loss, sum(out.losses.values()))
    out.losses["depth_prob"].backward(retain_graph=True)
    assert model.depth_prob.fc1.weight.grad is not None
    assert model.decoder.norm.weight.grad is None, "the depth probe must not train the decoder"
    out.loss.backward()
    assert model.spa3r.query_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for m in model.teachers().values() for p in m.parameters())


def test_asymmetric_context_features_equal_context_only_pass(spa3r_config, images):
    model = Spa3RForPretraining(spa3r_config).eval()
    with torch.no_grad():
        asym = model(images, view_mask=VIEW_MASK, asymmetric_masking=True)
        sym = model(images, view_mask=VIEW_MASK, asymmetric_masking=False)
    # context tokens never see target views, so both formulations give the same context features
    torch.testing.assert_close(asym.context_features, sym.context_features, atol=1e-5, rtol=1e-5)
    assert asym.context_features.shape == (2, 2, 6, 64)


def test_view_split_attention_equals_dense_mask(vggt_config, images):
    model = VGGTModel(vggt_config).eval()
    with torch.no_grad():
        split = model.aggregator(images, view_mask=VIEW_MASK)
        dense = model.aggregator(images, view_mask=VIEW_MASK, dense_view_mask_attention=True)
    for a, b in zip(split, dense):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sample_view_mask():
    mask = sample_view_mask(64, 8, 0.5, generator=torch.Generator().manual_seed(0))
    assert (~mask[:, 0]).all()
    assert ((~mask).sum(1) == 4).all()
    assert mask[:, 1:].float().mean(0).min() > 0.2  # every other view is sometimes a target
    with pytest.raises(ValueError, match="context views"):
        sample_view_mask(1, 1, 0.5)


def test_semantic_targets_can_be_precomputed(spa3r_config, images):
    model = Spa3RForPretraining(spa3r_config).eval()
    with torch.no_grad():
        out = model(images, view_mask=VIEW_MASK)
        cached = model(images, view_mask=VIEW_MASK, semantic_targets=out.target_sem)
        torch.testing.assert_close(cached.loss, out.loss, atol=0, rtol=0)
        without_teacher = Spa3RForPretraining(tiny_spa3r_config(semantic_teacher=False)).eval()
        with pytest.raises(ValueError, match="semantic_targets"):
            without_teacher(images, view_mask=VIEW_MASK)
        with pytest.raises(ValueError, match=r"semantic_targets must be \(B, V, h\*w, C\)"):
            model(images, view_mask=VIEW_MASK, semantic_targets=out.target_sem[:, :, :3])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x: x[..., :27, :], "multiples of the patch size 14"),
        (lambda x: x[:, :, :2], "3 \\(RGB\\) channels"),
        (lambda x: x[0], "must be \\(B, V, 3, H, W\\)"),
        (lambda x: x.index_fill(-1, torch.tensor([3]), float("nan")), "NaN or infinite"),
    ],
)
def test_bad_pixel_values(spa3r_config, images, mutate, message):
    model = Spa3RModel(spa3r_config)
    with pytest.raises(ValueError, match=message):
        model(mutate(images))


@pytest.mark.parametrize(
    "view_mask, message",
    [
        (torch.tensor([[True, True, True, True], [False, True, True, True]]), "no context view"),
        (torch.tensor([[False, False, False, False], [False, True, True, True]]), "no target view"),
        (torch.tensor([[False, True, True, True], [False, False, True, True]]), "same number of context views"),
        (torch.tensor([[0, 1, 0, 1], [0, 0, 1, 1]]), "bool tensor of shape"),
    ],
)
def test_bad_view_masks(spa3r_config, images, view_mask, message):
    model = Spa3RForPretraining(spa3r_config)
    with pytest.raises(ValueError, match=message):
        model(images, view_mask=view_mask)


def test_pretraining_needs_two_views(spa3r_config, images):
    with pytest.raises(ValueError, match="at least 2 views"):
        Spa3RForPretraining(spa3r_config)(images[:, :1])


def test_heads_run_in_float32_under_bf16_autocast(spa3r_config, images):
    model = Spa3RForPretraining(spa3r_config).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, view_mask=VIEW_MASK)
    assert out.extrinsics.dtype == out.intrinsics.dtype == out.target_depth.dtype == torch.float32
    assert out.pred_geo.dtype == torch.bfloat16  # the student itself runs in bf16
    assert torch.isfinite(out.loss)


def test_gradient_checkpointing_gives_same_gradients(spa3r_config, images):
    torch.manual_seed(0)
    model = Spa3RForPretraining(spa3r_config).train()
    reference = model(images, view_mask=VIEW_MASK).loss
    reference.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert not model.semantic_teacher.training, "frozen teachers must stay in eval mode"
    model.zero_grad()
    model.activation_checkpointing_enable()
    loss = model(images, view_mask=VIEW_MASK).loss
    loss.backward()
    torch.testing.assert_close(loss, reference)
    for name, grad in grads.items():  # recomputation reorders float32 sums: equal to a few ulps of the largest entry
        scale = grad.abs().max().item()
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-6 * scale,
                                   msg=name)  # fmt: skip


def _expected_counts():
    vggt = json.loads((PARITY_DIR / "vggt_1b_keys.json").read_text())
    spa3r = json.loads((PARITY_DIR / "spa3r_base_keys.json").read_text())
    dropped = set(spa3r["aggregator_vs_vggt_1b"]["keys_in_vggt_1b_missing_in_spa3r"])

    def count(keys: dict, prefixes, skip=()) -> int:
        return sum(
            torch.Size(shape).numel() for key, shape in keys.items() if key.startswith(prefixes) and key not in skip
        )

    aggregator = count(vggt["keys"], ("aggregator.",), {"aggregator." + k for k in dropped})
    spa3r_keys = {k[len("model.") :]: v for k, v in spa3r["keys"].items()}
    encoder = count(spa3r_keys, ("projection.", "query_embed.", "encoder."))
    pretraining_only = count(spa3r_keys, ("pose_tokenizer.", "decoder.", "heads.", "depth_prob."))
    heads = count(vggt["keys"], ("camera_head.", "depth_head."))
    return vggt, aggregator, encoder, pretraining_only, heads


def test_full_size_configs_match_official_parameter_counts():
    vggt_keys, aggregator, encoder, pretraining_only, heads = _expected_counts()
    with torch.device("meta"):
        vggt = VGGTModel(VGGTConfig())
        spa3r = Spa3RModel(Spa3RConfig())
        pretraining = Spa3RForPretraining(Spa3RConfig())

    def numel(model):
        return sum(p.numel() for p in model.parameters())

    by_module = vggt_keys["num_params_by_module"]
    assert numel(vggt) == vggt_keys["num_params"] - by_module["track_head"]
    assert numel(vggt.aggregator) == by_module["aggregator"]
    assert numel(spa3r) == aggregator + encoder
    assert numel(pretraining) == aggregator + encoder + pretraining_only + heads
    assert {k: tuple(v.shape) for k, v in vggt.state_dict().items()} == {
        k: tuple(v) for k, v in vggt_keys["keys"].items() if not k.startswith("track_head.")
    }


def test_trust_remote_code_from_saved_directory(spa3r_config, images, tmp_path):
    model = Spa3RModel(spa3r_config).eval()
    model.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["auto_map"]["AutoModel"].endswith("Spa3RModel")
    torch.save(images, tmp_path / "images.pt")
    torch.save(model(images).latents, tmp_path / "latents.pt")
    script = (
        "import sys, torch\n"
        "from transformers import AutoModel\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "assert 'modeling_spa3r' not in sys.modules, 'the installed package was imported'\n"
        "assert type(m).__module__.startswith('transformers_modules'), type(m).__module__\n"
        "out = m(torch.load(sys.argv[2], weights_only=True)).latents\n"
        "torch.testing.assert_close(out, torch.load(sys.argv[3], weights_only=True), atol=0, rtol=0)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model"), str(tmp_path / "images.pt"), str(tmp_path / "latents.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_view_slots_are_off_by_default_and_zero_codes_change_nothing(spa3r_config, images):
    assert spa3r_config.view_slot_embeddings == 0
    assert not any("view_slot" in key for key in Spa3RForPretraining(spa3r_config).state_dict())  # released layout
    torch.manual_seed(0)
    plain = Spa3RModel(spa3r_config).eval()
    slotted_config = Spa3RConfig.from_dict({**spa3r_config.to_dict(), "view_slot_embeddings": 6})
    slotted = Spa3RModel(slotted_config).eval()
    missing = slotted.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["view_slot_embed.weight"]
    with torch.no_grad():
        codes = slotted(images).latents
        slotted.view_slot_embed.weight.zero_()
        torch.testing.assert_close(slotted(images).latents, plain(images).latents, atol=0, rtol=0)
    assert not torch.allclose(codes, plain(images).latents)


def test_view_slots_in_order_at_inference_random_in_pretraining_and_bounded(spa3r_config, images):
    config = Spa3RConfig.from_dict({**spa3r_config.to_dict(), "view_slot_embeddings": 6})
    model = Spa3RForPretraining(config)
    encoder = model.spa3r
    assert encoder.view_slots(4).tolist() == [0, 1, 2, 3]
    torch.manual_seed(1)
    drawn = [encoder.view_slots(3, randomise=True).tolist() for _ in range(40)]
    assert all(slots[0] == 0 and slots == sorted(set(slots)) and 0 < slots[1] and slots[-1] < 6 for slots in drawn)
    assert {slot for slots in drawn for slot in slots} == set(range(6))  # every slot gets trained
    with pytest.raises(ValueError, match="7 context views, but this model tells at most view_slot_embeddings=6"):
        encoder.view_slots(7)
    with torch.no_grad():  # eval: ordered slots, the same latent every time; training: random slots
        model.eval()
        first, again = (model(images, view_mask=VIEW_MASK).latents for _ in range(2))
        torch.testing.assert_close(first, again, atol=0, rtol=0)
        model.train()
        torch.manual_seed(2)
        trained = [model(images, view_mask=VIEW_MASK).latents for _ in range(4)]
    assert any(not torch.allclose(latents, first) for latents in trained)
    with pytest.raises(ValueError, match="view_slot_embeddings must be >= 0"):
        Spa3RConfig(view_slot_embeddings=-1)
