"""Tiny Spa3R / VGGT configurations for fast CPU tests."""

from modeling_spa3r import Spa3RConfig, VGGTConfig


def tiny_vggt_config(**overrides) -> VGGTConfig:
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_embed_type="conv",
        camera_head_depth=1,
        camera_head_num_heads=2,
        dpt_features=16,
        dpt_out_channels=[8, 16, 32, 32],
        dpt_intermediate_layers=[0, 0, 1, 1],
    )
    values.update(overrides)
    return VGGTConfig(**values)


def tiny_dinov3_config() -> dict:
    return dict(
        model_type="dinov3_vit",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        patch_size=16,
        num_register_tokens=4,
    )


def tiny_spa3r_config(semantic_teacher: bool = True, **overrides) -> Spa3RConfig:
    values = dict(
        vggt_config=tiny_vggt_config(global_qk_norm="rmsnorm").to_dict(),
        semantic_teacher_config=tiny_dinov3_config() if semantic_teacher else None,
        hidden_size=32,
        num_attention_heads=4,
        num_queries=8,
        num_encoder_layers=1,
        num_decoder_layers=1,
        semantic_size=32,
        semantic_image_size=64,
    )
    values.update(overrides)
    return Spa3RConfig(**values)
