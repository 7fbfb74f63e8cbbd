"""Configuration of Spa3-VLM on Qwen3-VL: a Qwen3-VL backbone with the frozen Spa3R geometry encoder and fusion."""

from transformers import Qwen3VLConfig
from transformers.configuration_utils import PreTrainedConfig

from .configuration_spa3_vlm import Spa3VLMConfig, resolve_geometry_fields
from .configuration_spa3r import Spa3RConfig


class Spa3VLMQwen3Config(Qwen3VLConfig):
    r"""
    Spa3-VLM with a Qwen3-VL backbone. Every field of [`Qwen3VLConfig`] keeps its meaning; the geometry fields are
    those of [`Spa3VLMConfig`]:

    Args:
        geometry_config: the Spa3R encoder ([`Spa3RConfig`]).
        geometry_num_attention_heads: heads of the geometry cross-attention; `None` uses the language model's.
        geometry_adaptor_ratio: the gated adaptor's bottleneck is `text hidden_size // geometry_adaptor_ratio`.
        geometry_layer_norm_eps: epsilon of the per-head q/k LayerNorms and of the LayerNorm after the cross-attention.
        freeze_geometry_encoder: run Spa3R without gradients and with `requires_grad=False` parameters.
    """

    model_type = "spa3_vlm_qwen3"
    sub_configs_defaults = {**Qwen3VLConfig.sub_configs_defaults, "geometry_config": Spa3RConfig}
    base_config_class = Qwen3VLConfig  # the backbone's own config: `from_qwen_and_spa3r` reads base checkpoints with it

    geometry_config: dict | PreTrainedConfig | None = None
    geometry_num_attention_heads: int | None = None
    geometry_adaptor_ratio: int = 4
    geometry_layer_norm_eps: float = 1e-5
    freeze_geometry_encoder: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        resolve_geometry_fields(self)

    # one attention string goes to Qwen's towers while Spa3R keeps SDPA, as for the Qwen2.5-VL variant
    _attn_implementation = Spa3VLMConfig._attn_implementation

    @classmethod
    def from_qwen_config(cls, qwen_config: Qwen3VLConfig, geometry_config: Spa3RConfig | dict | None = None, **kwargs):
        """Build the config from a base Qwen3-VL config (e.g. to start SFT from Qwen3-VL + Spa3R)."""
        if qwen_config.model_type != "qwen3_vl":
            raise ValueError(f"expected a qwen3_vl config, got model_type {qwen_config.model_type!r}")
        base = qwen_config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "auto_map"):
            base.pop(key, None)
        base.update(kwargs)
        return cls(**base, geometry_config=geometry_config)


__all__ = ["Spa3VLMQwen3Config"]
