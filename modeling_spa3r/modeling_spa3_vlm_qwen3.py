"""
Spa3-VLM on Qwen3-VL: the Qwen3-VL backbone whose merged visual tokens (images and videos) are fused, per sample,
with the latents of a frozen Spa3R encoder through the backbone-generic fusion of `fusion.py`.

Where the geometry enters: Qwen3-VL hands visual features to its language model twice, as the merged tokens that
replace the `<|image_pad|>` / `<|video_pad|>` embeddings (`pooler_output`) and as DeepStack features added to the
hidden states of the first LLM layers (`deepstack_features`). Like the released Spa3-VLM, which fuses the tokens
that enter the LLM, only the merged tokens are fused; the DeepStack features stay Qwen3-VL's own.

Scenes: every sample with images or videos is one scene; its views are its images and sampled video frames in
text order (the processor builds them). `geometry_image_scenes` / `geometry_video_scenes` say which scene each
image / video belongs to. Notation: S scenes, Q Spa3R queries, D Spa3R width, C text hidden size.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen3VLForConditionalGeneration, Qwen3VLModel
from transformers.cache_utils import Cache
from transformers.modeling_utils import PreTrainedModel
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    BaseModelOutputWithDeepstackFeatures,
    Qwen3VLPreTrainedModel,
    Qwen3VLTextModel,
    Qwen3VLVisionModel,
)
from transformers.utils.generic import can_return_tuple

from .configuration_spa3_vlm_qwen3 import Spa3VLMQwen3Config
from .fusion import GeometryFusionMixin, Spa3VLMGeometryFusion, scene_sizes, split_scenes
from .modeling_spa3r import Spa3RModel


@dataclass
class Spa3VLMQwen3VisualFeaturesOutput(BaseModelOutputWithDeepstackFeatures):
    r"""
    pooler_output (`tuple[torch.FloatTensor]`):
        Per image / video, its merged Qwen3-VL tokens `(tokens_i, C)`, fused with its scene's geometry when geometry
        inputs were given.
    deepstack_features (`list[tuple[torch.FloatTensor]]`):
        Qwen3-VL's DeepStack features, unchanged by the geometry.
    geometry_latents (`torch.FloatTensor` of shape `(S, Q, D)`, *optional*): Spa3R latents of every scene.
    """

    geometry_latents: torch.FloatTensor | None = None


class Spa3VLMQwen3PreTrainedModel(GeometryFusionMixin, Qwen3VLPreTrainedModel):
    config: Spa3VLMQwen3Config
    _no_split_modules = ["Qwen3VLTextDecoderLayer", "Qwen3VLVisionBlock", "Spa3VLMGeometryFusion", "Spa3RModel"]


def _scene_list(scenes: torch.Tensor | None, count: int, kind: str) -> list[int]:
    if scenes is None:
        raise ValueError(f"geometry inputs with {kind}s need geometry_{kind}_scenes (the scene of every {kind})")
    scenes = scenes.tolist()
    if len(scenes) != count:
        raise ValueError(f"geometry_{kind}_scenes has {len(scenes)} entries but the batch has {count} {kind}(s)")
    return scenes


class Spa3VLMQwen3Model(Spa3VLMQwen3PreTrainedModel, Qwen3VLModel):
    """Qwen3-VL vision tower + language model, plus the Spa3R encoder and the geometry fusion."""

    def __init__(self, config: Spa3VLMQwen3Config):
        PreTrainedModel.__init__(self, config)
        self.visual = Qwen3VLVisionModel._from_config(config.vision_config)
        self.language_model = Qwen3VLTextModel._from_config(config.text_config)
        self.rope_deltas = None  # cached for decoding, as in Qwen3-VL
        self.geometry_encoder = Spa3RModel(config.geometry_config)
        self.geometry_fusion = Spa3VLMGeometryFusion(config)
        self.apply_geometry_freeze()
        self.post_init()

    def encode_geometry_inputs(
        self, geometry_pixel_values: torch.Tensor, geometry_scene_sizes: torch.LongTensor | None = None
    ) -> torch.Tensor:
        """Spa3R latents (S, Q, D) of the scenes in `geometry_pixel_values` (see `get_image_features`)."""
        sizes = scene_sizes(geometry_pixel_values, geometry_scene_sizes)
        scenes = split_scenes(geometry_pixel_values, sizes, self.config.geometry_config.vggt_config.patch_size)
        return self.encode_geometry(scenes)

    def _fused(self, outputs, latents, geometry_pixel_values, geometry_scene_sizes, scenes, kind):
        outputs = Spa3VLMQwen3VisualFeaturesOutput(**outputs)
        if latents is None and geometry_pixel_values is None:
            return outputs
        if latents is None:
            latents = self.encode_geometry_inputs(geometry_pixel_values, geometry_scene_sizes)
        scene_of = _scene_list(scenes, len(outputs.pooler_output), kind)
        outputs.pooler_output = self.fuse_scene_tokens(outputs.pooler_output, latents, scene_of)
        outputs.geometry_latents = latents
        return outputs

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.LongTensor | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        geometry_image_scenes: torch.LongTensor | None = None,
        geometry_latents: torch.Tensor | None = None,
        **kwargs,
    ) -> Spa3VLMQwen3VisualFeaturesOutput:
        r"""
        pixel_values / image_grid_thw: Qwen3-VL's flattened patches and patch grid per image.
        geometry_pixel_values (`torch.Tensor` of shape `(num_views, 3, H, W)`, *optional*): every view of every scene
            (images and sampled video frames) as Spa3R inputs in [0, 1], zero-padded to a common size.
        geometry_scene_sizes (`torch.LongTensor` of shape `(S, 3)`, *optional*): (V, H, W) of each scene.
        geometry_image_scenes (`torch.LongTensor` of shape `(num_images,)`, *optional*): scene of every image.
        geometry_latents (`torch.Tensor` of shape `(S, Q, D)`, *optional*): the scenes' Spa3R latents, when already
            encoded (the geometry pixels are then not needed).
        """
        outputs = super().get_image_features(pixel_values, image_grid_thw, return_dict=True, **kwargs)
        return self._fused(
            outputs, geometry_latents, geometry_pixel_values, geometry_scene_sizes, geometry_image_scenes, "image"
        )

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        video_grid_thw: torch.LongTensor | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        geometry_video_scenes: torch.LongTensor | None = None,
        geometry_latents: torch.Tensor | None = None,
        **kwargs,
    ) -> Spa3VLMQwen3VisualFeaturesOutput:
        r"""As `get_image_features`, for videos: `geometry_video_scenes` (num_videos,) is the scene of every video."""
        outputs = super().get_video_features(pixel_values_videos, video_grid_thw, return_dict=True, **kwargs)
        return self._fused(
            outputs, geometry_latents, geometry_pixel_values, geometry_scene_sizes, geometry_video_scenes, "video"
        )

    def _check_scenes_match_samples(self, input_ids, grids, scenes, num_scenes) -> None:
        """Every image/video must belong to the scene of the sample whose placeholder tokens it fills."""
        merge = self.config.vision_config.spatial_merge_size**2
        scene_of_sample, next_scene = {}, 0
        has_visual = ((input_ids == self.config.image_token_id) | (input_ids == self.config.video_token_id)).any(-1)
        for sample, visual in enumerate(has_visual.tolist()):
            if visual:
                scene_of_sample[sample], next_scene = next_scene, next_scene + 1
        if next_scene != num_scenes:
            raise ValueError(f"{num_scenes} geometry scenes given but {next_scene} samples have images or videos")
        for kind, token_id in (("image", self.config.image_token_id), ("video", self.config.video_token_id)):
            if grids[kind] is None:
                continue
            tokens_per_item = (grids[kind].prod(-1) // merge).tolist()
            ends = (input_ids == token_id).sum(-1).cumsum(0).tolist()  # cumulative placeholder tokens per sample
            start = 0
            for item, (tokens, scene) in enumerate(zip(tokens_per_item, scenes[kind])):
                sample = next((s for s, end in enumerate(ends) if start < end), None)
                if sample is None or scene_of_sample.get(sample) != scene:
                    raise ValueError(
                        f"{kind} {item} fills placeholder tokens of sample {sample} (scene {scene_of_sample.get(sample)}) "
                        f"but geometry_{kind}_scenes says scene {scene}"
                    )
                start += tokens

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        mm_encoder_outputs: dict | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        geometry_image_scenes: torch.LongTensor | None = None,
        geometry_video_scenes: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        Qwen3-VL's forward plus the geometry inputs (see `get_image_features`). Spa3R runs once per call; images and
        videos are encoded and fused here, then handed to Qwen3-VL as `mm_encoder_outputs`.
        """
        if geometry_pixel_values is not None:
            if pixel_values is None and pixel_values_videos is None:
                raise ValueError("geometry_pixel_values were given without images or videos")
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            if mm_encoder_outputs.get("image") is not None or mm_encoder_outputs.get("video") is not None:
                raise ValueError("pass either pixels (with geometry) or pre-encoded visual outputs, not both")
            latents = self.encode_geometry_inputs(geometry_pixel_values, geometry_scene_sizes)  # (S, Q, D)
            if input_ids is not None:
                self._check_scenes_match_samples(
                    input_ids,
                    {"image": image_grid_thw if pixel_values is not None else None,
                     "video": video_grid_thw if pixel_values_videos is not None else None},
                    {"image": geometry_image_scenes.tolist() if geometry_image_scenes is not None else [],
                     "video": geometry_video_scenes.tolist() if geometry_video_scenes is not None else []},
                    latents.shape[0],
                )  # fmt: skip
            if pixel_values is not None:
                mm_encoder_outputs["image"] = self.get_image_features(
                    pixel_values, image_grid_thw, geometry_image_scenes=geometry_image_scenes,
                    geometry_latents=latents, return_dict=True, **kwargs,
                )  # fmt: skip
            if pixel_values_videos is not None:
                mm_encoder_outputs["video"] = self.get_video_features(
                    pixel_values_videos, video_grid_thw, geometry_video_scenes=geometry_video_scenes,
                    geometry_latents=latents, return_dict=True, **kwargs,
                )  # fmt: skip
            pixel_values = pixel_values_videos = None
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )


class Spa3VLMQwen3ForConditionalGeneration(Spa3VLMQwen3PreTrainedModel, Qwen3VLForConditionalGeneration):
    def __init__(self, config: Spa3VLMQwen3Config):
        PreTrainedModel.__init__(self, config)
        self.model = Spa3VLMQwen3Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        return self.model.get_image_features(pixel_values, image_grid_thw, **kwargs)

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        return self.model.get_video_features(pixel_values_videos, video_grid_thw, **kwargs)

    def _prepare_multimodal_encoder_kwargs_for_generation(self, model_kwargs: dict) -> dict:
        """Encode the geometry once, before Qwen3-VL's image and video encoders both read its latents."""
        geometry_pixel_values = model_kwargs.pop("geometry_pixel_values", None)
        geometry_scene_sizes = model_kwargs.pop("geometry_scene_sizes", None)
        if geometry_pixel_values is not None and model_kwargs.get("geometry_latents") is None:
            model_kwargs["geometry_latents"] = self.model.encode_geometry_inputs(
                geometry_pixel_values, geometry_scene_sizes
            )
        model_kwargs = super()._prepare_multimodal_encoder_kwargs_for_generation(model_kwargs)
        for key in ("geometry_latents", "geometry_image_scenes", "geometry_video_scenes"):
            model_kwargs.pop(key, None)
        return model_kwargs

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        geometry_pixel_values: torch.Tensor | None = None,
        geometry_scene_sizes: torch.LongTensor | None = None,
        geometry_image_scenes: torch.LongTensor | None = None,
        geometry_video_scenes: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        labels (`torch.LongTensor` of shape `(B, L)`, *optional*): next-token targets, -100 = ignored (shifted inside).
        geometry_*: the Spa3R views and their scenes, see [`Spa3VLMQwen3Model.get_image_features`].
        Returns a `MultimodalCausalLMOutputWithPast` with logits (B, L, vocab).
        """
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs,
            geometry_pixel_values=geometry_pixel_values,
            geometry_scene_sizes=geometry_scene_sizes,
            geometry_image_scenes=geometry_image_scenes,
            geometry_video_scenes=geometry_video_scenes,
            **kwargs,
        )


__all__ = [
    "Spa3VLMQwen3ForConditionalGeneration",
    "Spa3VLMQwen3Model",
    "Spa3VLMQwen3PreTrainedModel",
    "Spa3VLMQwen3VisualFeaturesOutput",
]
