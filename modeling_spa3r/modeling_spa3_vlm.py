"""
Spa3-VLM: Qwen2.5-VL whose image embeddings are fused, per sample, with the latents of a frozen Spa3R encoder
(the backbone-generic fusion lives in `fusion.py`; the Qwen3-VL variant in `modeling_spa3_vlm_qwen3.py`).

Notation: S scenes (one per sample that has images; the images of a sample are the views of its scene), V views of a
scene, N image tokens of a scene (all its images after Qwen's patch merger), C text hidden size, Q Spa3R queries,
D Spa3R width, heads = `config.geometry_num_attention_heads`, d = C / heads.
"""

import functools
import json
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel
from transformers.cache_utils import Cache
from transformers.configuration_utils import PreTrainedConfig
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLPreTrainedModel,
    Qwen2_5_VLTextModel,
)
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple
from transformers.utils.hub import cached_file

from .configuration_spa3_vlm import Spa3VLMConfig
from .fusion import GeometryFusionMixin, Spa3VLMGeometryFusion, scene_sizes, split_scenes
from .modeling_spa3r import Spa3RModel

logger = logging.get_logger(__name__)

# Checkpoints written by Qwen2.5-VL (and by this class, see below) use the legacy layout `visual.*` / `model.layers.*`;
# the module tree is `model.visual.*` / `model.language_model.*`. Our geometry modules live next to them.
register_checkpoint_conversion_mapping(
    "Spa3VLMForConditionalGeneration",
    [
        WeightRenaming(source_patterns=r"^visual", target_patterns="model.visual"),
        WeightRenaming(
            source_patterns=r"^model(?!\.(language_model|visual|geometry_encoder|geometry_fusion))",
            target_patterns="model.language_model",
        ),
    ],
    overwrite=True,
)
# The base model (`AutoModel` on a Spa3-VLM folder) from the same checkpoints: `model.layers.*` → `language_model.*`.
register_checkpoint_conversion_mapping(
    "Spa3VLMModel",
    [
        WeightRenaming(
            source_patterns=r"^model\.(?!(?:language_model|visual|geometry_encoder|geometry_fusion)\.)(.+)",
            target_patterns=r"model.language_model.\1",
        )
    ],
    overwrite=True,
)

# Official hustvl/Spa3-VLM key names → ours (applied before the legacy Qwen renames above).
OFFICIAL_KEY_MAPPING = {
    r"^geometry_encoder\.spa3r\.": "model.geometry_encoder.",
    r"^geometry_projector\.0\.": "model.geometry_fusion.projector.linear_1.",
    r"^geometry_projector\.2\.": "model.geometry_fusion.projector.linear_2.",
    r"^geom_cross_attention\.proj\.": "model.geometry_fusion.cross_attention.o_proj.",
    r"^geom_cross_attention\.": "model.geometry_fusion.cross_attention.",
    r"^ln\.": "model.geometry_fusion.norm.",
    r"^geometry_adaptor\.0\.": "model.geometry_fusion.adaptor.down_proj.",
    r"^geometry_adaptor\.2\.": "model.geometry_fusion.adaptor.up_proj.",
    r"^geometry_gate\.0\.": "model.geometry_fusion.gate_proj.",
}
# Parts of the official Spa3R checkpoint that only pretraining uses (reported as ignored when loading).
SPA3R_TRAINING_ONLY_MODULES = (
    "decoder",
    "heads",
    "depth_prob",
    "pose_tokenizer",
    "camera_head",
    "depth_head",
    "point_head",
    "dino",
)
_TRAINING_ONLY_PATTERN = r"geometry_encoder\.(spa3r\.)?(" + "|".join(SPA3R_TRAINING_ONLY_MODULES) + r")\."


@dataclass
class Spa3VLMImageFeaturesOutput(BaseModelOutputWithPooling):
    r"""
    pooler_output (`tuple[torch.FloatTensor]`):
        Per image, its merged Qwen image tokens `(tokens_i, C)`, fused with the geometry of its scene when
        geometry inputs were given.
    geometry_latents (`torch.FloatTensor` of shape `(S, Q, D)`, *optional*):
        Spa3R latents of every scene, in scene order.
    """

    geometry_latents: torch.FloatTensor | None = None


class Spa3VLMPreTrainedModel(GeometryFusionMixin, Qwen2_5_VLPreTrainedModel):
    config: Spa3VLMConfig
    _no_split_modules = [
        "Qwen2_5_VLDecoderLayer",
        "Qwen2_5_VLVisionBlock",
        "Spa3VLMGeometryFusion",
        "Spa3RModel",
    ]
    _keys_to_ignore_on_load_unexpected = [_TRAINING_ONLY_PATTERN]


class Spa3VLMModel(Spa3VLMPreTrainedModel, Qwen2_5_VLModel):
    """Qwen2.5-VL vision tower + language model, plus the Spa3R encoder and the geometry fusion."""

    def __init__(self, config: Spa3VLMConfig):
        PreTrainedModel.__init__(self, config)
        self.visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(config.vision_config)
        self.language_model = Qwen2_5_VLTextModel._from_config(config.text_config)
        self.rope_deltas = None  # cached for decoding, as in Qwen2.5-VL
        self.geometry_encoder = Spa3RModel(config.geometry_config)
        self.geometry_fusion = Spa3VLMGeometryFusion(config)
        self.apply_geometry_freeze()
        self.post_init()

    def fuse_geometry(
        self,
        image_embeds: tuple[torch.Tensor, ...],
        geometry_pixel_values: torch.Tensor,
        geometry_scene_sizes: torch.Tensor | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """
        image_embeds: per image (tokens_i, C), all images of the batch in order. The scenes cover consecutive images:
        scene s is the next V_s images. Returns the fused per-image embeddings and the latents (S, Q, D).
        """
        sizes = scene_sizes(geometry_pixel_values, geometry_scene_sizes)
        num_views = sum(size[0] for size in sizes)
        given = geometry_pixel_values.shape[:-3].numel()  # views in (num_views, 3, H, W) or (S, V, 3, H, W)
        if num_views != len(image_embeds) or num_views != given:
            raise ValueError(
                f"the geometry scenes hold {num_views} views ({given} given in "
                f"geometry_pixel_values) but the batch has {len(image_embeds)} images: every image must be one view"
            )
        scenes = split_scenes(geometry_pixel_values, sizes, self.config.geometry_config.vggt_config.patch_size)
        latents = self.encode_geometry(scenes)  # (S, Q, D)
        scene_of = [scene for scene, (views, _, _) in enumerate(sizes) for _ in range(views)]
        return self.fuse_scene_tokens(image_embeds, latents, scene_of), latents

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.LongTensor | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        **kwargs,
    ) -> Spa3VLMImageFeaturesOutput:
        r"""
        pixel_values (`torch.Tensor` of shape `(sum of t·h·w over images, 3·2·14·14)`): Qwen's flattened patches.
        image_grid_thw (`torch.LongTensor` of shape `(num_images, 3)`): Qwen's patch grid per image.
        geometry_pixel_values (`torch.Tensor` of shape `(num_images, 3, H, W)` or `(S, V, 3, H, W)`, *optional*):
            every image again, as Spa3R views in [0, 1]; zero-padded to a common size when scenes differ.
        geometry_scene_sizes (`torch.LongTensor` of shape `(S, 3)`, *optional*): (V, H, W) of each scene; scene s is
            the next V images.
        """
        outputs = super().get_image_features(pixel_values, image_grid_thw, return_dict=True, **kwargs)
        outputs = Spa3VLMImageFeaturesOutput(**outputs)
        if geometry_pixel_values is not None:
            outputs.pooler_output, outputs.geometry_latents = self.fuse_geometry(
                outputs.pooler_output, geometry_pixel_values, geometry_scene_sizes
            )
        return outputs

    def _check_scenes_match_samples(
        self,
        input_ids: torch.LongTensor,
        image_grid_thw: torch.LongTensor,
        geometry_pixel_values: torch.Tensor,
        geometry_scene_sizes: torch.LongTensor | None,
    ) -> None:
        """Each sample with image tokens owns the next scene, and its token count equals that scene's images'."""
        sizes = scene_sizes(geometry_pixel_values, geometry_scene_sizes)
        merge = self.config.vision_config.spatial_merge_size**2
        tokens_per_image = (image_grid_thw.prod(-1) // merge).tolist()
        tokens_per_sample = (input_ids == self.config.image_token_id).sum(-1).tolist()
        scene, image = 0, 0
        for sample, num_tokens in enumerate(tokens_per_sample):
            if num_tokens == 0:
                continue
            if scene >= len(sizes):
                raise ValueError(
                    f"sample {sample} has {num_tokens} image tokens but all {len(sizes)} geometry scenes are used up"
                )
            views = sizes[scene][0]
            expected = sum(tokens_per_image[image : image + views])
            images, covered = 0, 0  # the images whose tokens make up this sample's
            while covered < num_tokens and image + images < len(tokens_per_image):
                covered, images = covered + tokens_per_image[image + images], images + 1
            if expected != num_tokens and covered == num_tokens:
                raise ValueError(
                    f"geometry scene {scene} has {views} view(s) (geometry_scene_sizes / geometry_pixel_values) but "
                    f"sample {sample} has {images} image(s): every image of a sample must be one view of its scene"
                )
            if expected != num_tokens:
                raise ValueError(
                    f"image tokens do not match the images: sample {sample} has {num_tokens} image tokens, its "
                    f"{views} image(s) give {expected}"
                )
            scene, image = scene + 1, image + views
        if scene != len(sizes):
            raise ValueError(f"{len(sizes)} geometry scenes given but only {scene} samples have images")

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        Qwen2.5-VL's forward plus the geometry inputs (see `get_image_features`). The images are encoded and fused
        here, then handed to Qwen as `mm_encoder_outputs`; `generate` instead encodes them once before prefill.
        """
        if geometry_pixel_values is not None:
            if pixel_values is None:
                raise ValueError("geometry_pixel_values were given without images (pixel_values)")
            if input_ids is not None:
                self._check_scenes_match_samples(input_ids, image_grid_thw, geometry_pixel_values, geometry_scene_sizes)
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            if mm_encoder_outputs.get("image") is not None:
                raise ValueError("pass either pixel_values (with geometry) or pre-encoded image outputs, not both")
            mm_encoder_outputs["image"] = self.get_image_features(
                pixel_values,
                image_grid_thw,
                geometry_pixel_values=geometry_pixel_values,
                geometry_scene_sizes=geometry_scene_sizes,
                return_dict=True,
                **kwargs,
            )
            pixel_values = None
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            second_per_grid_ts=second_per_grid_ts,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )


class Spa3VLMForConditionalGeneration(Spa3VLMPreTrainedModel, Qwen2_5_VLForConditionalGeneration):
    def __init__(self, config: Spa3VLMConfig):
        PreTrainedModel.__init__(self, config)
        self.model = Spa3VLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.LongTensor | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        **kwargs,
    ):
        return self.model.get_image_features(
            pixel_values,
            image_grid_thw,
            geometry_pixel_values=geometry_pixel_values,
            geometry_scene_sizes=geometry_scene_sizes,
            **kwargs,
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        labels (`torch.LongTensor` of shape `(B, L)`, *optional*): next-token targets, -100 = ignored (shifted inside).
        geometry_pixel_values / geometry_scene_sizes: the Spa3R views, see [`Spa3VLMModel.get_image_features`].
        Returns a `MultimodalCausalLMOutputWithPast` with logits (B, L, vocab).
        """
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            second_per_grid_ts=second_per_grid_ts,
            logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs,
            geometry_pixel_values=geometry_pixel_values,
            geometry_scene_sizes=geometry_scene_sizes,
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, geometry_config=None, **kwargs):
        r"""
        Loads our own checkpoints, and official hustvl/Spa3-VLM directories (a `qwen2_5_vl` config.json with
        `use_geometry_encoder`): those are converted on the fly; `geometry_config` ([`Spa3RConfig`] or dict) then
        gives the Spa3R sizes the official config does not carry. The conversion report (keys ignored as
        pretraining-only, keys that did not map, missing keys) is logged and kept in `model.conversion_report`.
        """
        official = None
        if kwargs.get("config") is None and pretrained_model_name_or_path is not None:
            official = _read_official_config(pretrained_model_name_or_path, kwargs)
        if official is None:
            if geometry_config is not None:
                raise ValueError("geometry_config only applies to official hustvl/Spa3-VLM checkpoints")
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

        kwargs["config"] = Spa3VLMConfig.from_official_dict(official, geometry_config=geometry_config)
        kwargs["key_mapping"] = {**OFFICIAL_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        # save in our layout, not back in the official names the key mapping came from
        model._weight_conversions = None
        checkpoint_keys = _checkpoint_keys(pretrained_model_name_or_path, kwargs)
        model.conversion_report = {
            "ignored_training_only": sorted(k for k in checkpoint_keys if _is_training_only(k)),
            "unmapped": sorted(info["unexpected_keys"]),
            "missing": sorted(info["missing_keys"]),
            "mismatched": sorted(str(k) for k in info["mismatched_keys"]),
        }
        _log_report(model.conversion_report)
        return (model, info) if wants_info else model


def _is_training_only(key: str) -> bool:
    return re.match(r"^" + _TRAINING_ONLY_PATTERN, key) is not None


def _hub_kwargs(kwargs: dict) -> dict:
    names = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
    return {name: kwargs[name] for name in names if name in kwargs}


def _read_official_config(path, kwargs) -> dict | None:
    """The raw config.json if `path` is an official Spa3-VLM checkpoint (qwen2_5_vl + use_geometry_encoder)."""
    config_file = cached_file(path, "config.json", _raise_exceptions_for_missing_entries=False, **_hub_kwargs(kwargs))
    if config_file is None:
        return None
    with open(config_file) as f:
        config_dict = json.load(f)
    if config_dict.get("model_type") == "qwen2_5_vl" and "use_geometry_encoder" in config_dict:
        return config_dict
    return None


def _is_official_config(config) -> bool:
    """A Qwen2.5-VL config object carrying the official Spa3-VLM geometry encoder (not our Spa3VLMConfig)."""
    return (
        not isinstance(config, Spa3VLMConfig)
        and getattr(config, "model_type", None) == "qwen2_5_vl"
        and bool(getattr(config, "use_geometry_encoder", False))
    )


def refuse_official_checkpoint(model_class, pretrained_model_name_or_path, kwargs: dict) -> None:
    """Raise if a class other than Spa3-VLM's is asked to load an official Spa3-VLM checkpoint."""
    config = kwargs.get("config")
    if isinstance(config, PreTrainedConfig):
        official = _is_official_config(config)
    else:
        try:
            found = _read_official_config(config or pretrained_model_name_or_path, kwargs)
        except OSError:
            found = None  # nothing this check can read: transformers reports it
        official = bool(found and found["use_geometry_encoder"])
    if official:
        subfolder = kwargs.get("subfolder")
        where = repr(str(pretrained_model_name_or_path)) + (f", subfolder={subfolder!r}" if subfolder else "")
        raise ValueError(
            f"{where} is an official Spa3-VLM checkpoint (a qwen2_5_vl config with use_geometry_encoder=true): "
            f"{model_class.__name__} would load it as plain Qwen2.5-VL without its geometry encoder and fusion. "
            f"Load it with `Spa3VLMForConditionalGeneration.from_pretrained({where})` after `import modeling_spa3r` "
            "(converted on the fly), or convert it once: `spa3r convert vlm --input DIR --output DIR`."
        )


def _guard_qwen_from_pretrained() -> None:
    """The Qwen2.5-VL classes, hence the Auto classes mapped to them, refuse official Spa3-VLM checkpoints."""
    if getattr(Qwen2_5_VLPreTrainedModel.from_pretrained, "refuses_official_spa3_vlm", False):
        return
    original = Qwen2_5_VLPreTrainedModel.from_pretrained.__func__

    @functools.wraps(original)
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if not issubclass(cls, Spa3VLMPreTrainedModel):
            refuse_official_checkpoint(cls, pretrained_model_name_or_path, kwargs)
        return original(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    from_pretrained.refuses_official_spa3_vlm = True
    Qwen2_5_VLPreTrainedModel.from_pretrained = classmethod(from_pretrained)


_guard_qwen_from_pretrained()


def _checkpoint_keys(path, kwargs) -> list[str]:
    """Tensor names of a (possibly sharded) safetensors checkpoint, read from the headers only."""
    from safetensors import safe_open

    hub = _hub_kwargs(kwargs)
    index = cached_file(path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub)
    if index is not None:
        with open(index) as f:
            return sorted(json.load(f)["weight_map"])
    weights = cached_file(path, "model.safetensors", **hub)
    with safe_open(weights, framework="pt") as f:
        return sorted(f.keys())


def _log_report(report: dict) -> None:
    logger.info(
        f"official Spa3-VLM checkpoint converted; {len(report['ignored_training_only'])} pretraining-only Spa3R keys "
        "ignored (decoder, heads, DINO, camera/depth/point heads, ...)"
    )
    for kind in ("unmapped", "missing", "mismatched"):
        if report[kind]:
            logger.warning(f"{len(report[kind])} {kind} keys in the official checkpoint: {report[kind]}")


__all__ = [
    "Spa3VLMPreTrainedModel",
    "Spa3VLMModel",
    "Spa3VLMForConditionalGeneration",
    "Spa3VLMGeometryFusion",
    "Spa3VLMImageFeaturesOutput",
    "OFFICIAL_KEY_MAPPING",
    "SPA3R_TRAINING_ONLY_MODULES",
]
