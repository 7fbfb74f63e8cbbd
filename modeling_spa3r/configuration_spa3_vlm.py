"""Configuration of Spa3-VLM: Qwen2.5-VL with a frozen Spa3R geometry encoder fused into its image embeddings."""

from transformers import Qwen2_5_VLConfig
from transformers.configuration_utils import PreTrainedConfig

from .attention import geometry_attention_for
from .configuration_spa3r import Spa3RConfig

# Fields an official hustvl/Spa3-VLM config.json adds to a `qwen2_5_vl` config.
OFFICIAL_EXTRA_FIELDS = ("use_geometry_encoder", "geometry_encoder_type", "spa3r_embed_dim", "spa3r_num_queries")


class Spa3VLMConfig(Qwen2_5_VLConfig):
    r"""
    Spa3-VLM = Qwen2.5-VL + Spa3R. Every field of [`Qwen2_5_VLConfig`] keeps its meaning; the additions are:

    Args:
        geometry_config: the Spa3R encoder ([`Spa3RConfig`]). Its latents (num_queries, hidden_size) are projected to
            the language model width and attended to by the image tokens of the same sample.
        geometry_num_attention_heads: heads of the geometry cross-attention; `None` uses the language model's
            `num_attention_heads` (as the released model does).
        geometry_adaptor_ratio: the gated adaptor's bottleneck is `text hidden_size // geometry_adaptor_ratio`.
        geometry_layer_norm_eps: epsilon of the per-head q/k LayerNorms and of the LayerNorm after the cross-attention.
        freeze_geometry_encoder: run Spa3R without gradients and with `requires_grad=False` parameters (the released
            SFT recipe keeps it frozen).
    """

    model_type = "spa3_vlm"
    sub_configs_defaults = {**Qwen2_5_VLConfig.sub_configs_defaults, "geometry_config": Spa3RConfig}
    base_config_class = Qwen2_5_VLConfig  # the backbone's own config: `from_qwen_and_spa3r` reads base checkpoints with it

    geometry_config: dict | PreTrainedConfig | None = None
    geometry_num_attention_heads: int | None = None
    geometry_adaptor_ratio: int = 4
    geometry_layer_norm_eps: float = 1e-5
    freeze_geometry_encoder: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        resolve_geometry_fields(self)

    @property
    def _attn_implementation(self):
        return self._attn_implementation_internal

    @_attn_implementation.setter
    def _attn_implementation(self, value: str | dict | None):
        """
        One string (e.g. `attn_implementation="flash_attention_2"` or `"eager"`) goes to Qwen's vision tower and
        language model, while the Spa3R encoder keeps SDPA (its only implementation, see `attention.py`); the dict
        form sets each part, e.g. `{"text_config": "flash_attention_2", "vision_config": "sdpa", "geometry_config": "sdpa"}`.
        """
        PreTrainedConfig._attn_implementation.fset(self, value)
        geometry = getattr(self, "geometry_config", None)
        if isinstance(geometry, PreTrainedConfig) and not isinstance(value, dict):
            geometry._attn_implementation = geometry_attention_for(value)

    @classmethod
    def from_qwen_config(cls, qwen_config: Qwen2_5_VLConfig, geometry_config: Spa3RConfig | dict | None = None, **kwargs):
        """Build a Spa3-VLM config from a base Qwen2.5-VL config (e.g. to start SFT from Qwen + Spa3R)."""
        base = qwen_config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "auto_map", *OFFICIAL_EXTRA_FIELDS):
            base.pop(key, None)
        base.update(kwargs)
        return cls(**base, geometry_config=geometry_config)

    @classmethod
    def from_official_dict(cls, config_dict: dict, geometry_config: Spa3RConfig | dict | None = None):
        """
        Convert an official hustvl/Spa3-VLM config.json (a `qwen2_5_vl` config with `use_geometry_encoder`,
        `geometry_encoder_type`, `spa3r_embed_dim`, `spa3r_num_queries`). Those fields only carry Spa3R's width and
        query count; every other Spa3R size is the released architecture unless `geometry_config` overrides it.
        """
        if config_dict.get("model_type") != "qwen2_5_vl" or "use_geometry_encoder" not in config_dict:
            raise ValueError(
                "not an official Spa3-VLM config: expected model_type 'qwen2_5_vl' with a 'use_geometry_encoder' field, "
                f"got model_type {config_dict.get('model_type')!r}"
            )
        if not config_dict["use_geometry_encoder"]:
            raise ValueError(
                "this checkpoint has use_geometry_encoder=False: it is a plain Qwen2.5-VL, load it with "
                "Qwen2_5_VLForConditionalGeneration"
            )
        if config_dict.get("geometry_encoder_type", "spa3r") != "spa3r":
            raise ValueError(f"unsupported geometry_encoder_type {config_dict['geometry_encoder_type']!r} (only 'spa3r')")
        width, queries = config_dict.get("spa3r_embed_dim", 768), config_dict.get("spa3r_num_queries", 256)
        if geometry_config is None:
            try:
                geometry_config = Spa3RConfig(hidden_size=width, num_queries=queries)
            except ValueError as error:
                raise ValueError(
                    f"the checkpoint's Spa3R (width {width}, {queries} queries) does not fit the released Spa3R "
                    f"architecture ({error}); pass its full Spa3R config as `geometry_config`"
                ) from error
        elif isinstance(geometry_config, dict):
            geometry_config = Spa3RConfig(**geometry_config)
        if (geometry_config.hidden_size, geometry_config.num_queries) != (width, queries):
            raise ValueError(
                f"the Spa3R config override has hidden_size={geometry_config.hidden_size}, "
                f"num_queries={geometry_config.num_queries} but the checkpoint says spa3r_embed_dim={width}, "
                f"spa3r_num_queries={queries}"
            )
        return cls.from_qwen_config(Qwen2_5_VLConfig(**_strip_official(config_dict)), geometry_config=geometry_config)


def resolve_geometry_fields(config) -> None:
    """Fill `geometry_num_attention_heads` from the language model and check the fusion sizes (any Spa3-VLM config)."""
    if config.geometry_num_attention_heads is None:
        config.geometry_num_attention_heads = config.text_config.num_attention_heads
    hidden_size = config.text_config.hidden_size
    if hidden_size % config.geometry_num_attention_heads:
        raise ValueError(
            f"text hidden_size {hidden_size} is not divisible by geometry_num_attention_heads "
            f"{config.geometry_num_attention_heads}"
        )
    if hidden_size % config.geometry_adaptor_ratio:
        raise ValueError(
            f"text hidden_size {hidden_size} is not divisible by geometry_adaptor_ratio {config.geometry_adaptor_ratio}"
        )


def _strip_official(config_dict: dict) -> dict:
    return {
        k: v
        for k, v in config_dict.items()
        if k not in ("model_type", "architectures", "transformers_version", *OFFICIAL_EXTRA_FIELDS)
    }


__all__ = ["Spa3VLMConfig"]
