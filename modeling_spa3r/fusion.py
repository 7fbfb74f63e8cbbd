"""
Backbone-generic geometry fusion of Spa3-VLM: the visual tokens of a sample cross-attend to the Spa3R latents of
its scene through a gated, zero-initialised adaptor, residually.

The fusion is per token given the scene's latents (no token sees another token), so it can be attached to any VLM
at the point where its vision tower hands merged visual tokens to the language model (`get_image_features` /
`get_video_features` in transformers' Qwen-VL family). A backbone's model class mixes in [`GeometryFusionMixin`]
and owns `geometry_encoder` (a `Spa3RModel`) and `geometry_fusion` (a [`Spa3VLMGeometryFusion`]).

Notation: S scenes, V views of a scene, N visual tokens of a scene, C text hidden size, Q Spa3R queries, D Spa3R
width, heads = `config.geometry_num_attention_heads`, d = C / heads.
"""

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .modeling_spa3r import Spa3RModel

logger = logging.getLogger(__name__)
GEOMETRY_PREFIXES = ("model.geometry_encoder.", "model.geometry_fusion.")


class Spa3VLMGeometryProjector(nn.Module):
    """Spa3R latents (…, D) → language-model width (…, C): Linear → GELU → Linear."""

    def __init__(self, geometry_size: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(geometry_size, hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(latents)))


class Spa3VLMCrossAttention(nn.Module):
    """Image tokens attend to their scene's projected latents: separate q/k/v projections, per-head q/k LayerNorm, SDPA."""

    def __init__(self, hidden_size: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=eps)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=eps)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, queries: torch.Tensor, keys_values: torch.Tensor) -> torch.Tensor:
        # queries (S, N, C), keys_values (S, Q, C) → (S, N, C)
        num_scenes, num_tokens, hidden_size = queries.shape
        q = self.q_norm(self.q_proj(queries).view(num_scenes, num_tokens, self.num_heads, self.head_dim))
        k = self.k_norm(self.k_proj(keys_values).view(num_scenes, -1, self.num_heads, self.head_dim))
        v = self.v_proj(keys_values).view(num_scenes, -1, self.num_heads, self.head_dim)
        # (S, heads, N, d) attending over (S, heads, Q, d)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(num_scenes, num_tokens, hidden_size))


class Spa3VLMGeometryAdaptor(nn.Module):
    """Bottleneck C → C / ratio → C; `up_proj` starts at zero so a fresh model is exactly the base VLM."""

    def __init__(self, hidden_size: int, ratio: int):
        super().__init__()
        self.down_proj = nn.Linear(hidden_size, hidden_size // ratio)
        self.act = nn.GELU()
        self.up_proj = nn.Linear(hidden_size // ratio, hidden_size)
        self.up_proj.zero_init = True  # read by `_init_weights`

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.up_proj(self.act(self.down_proj(hidden_states)))


class Spa3VLMGeometryFusion(nn.Module):
    """
    fused = image_embeds + adaptor(x) · sigmoid(gate_proj(x)),  x = norm(cross_attention(image_embeds, projector(latents))).
    Every scene is handled on its own: image tokens only see the latents of their own sample.

    `config` is any Spa3-VLM configuration: it needs `text_config.hidden_size`, `geometry_config.hidden_size`,
    `geometry_num_attention_heads`, `geometry_layer_norm_eps` and `geometry_adaptor_ratio`.
    """

    def __init__(self, config):
        super().__init__()
        hidden_size = config.text_config.hidden_size
        self.projector = Spa3VLMGeometryProjector(config.geometry_config.hidden_size, hidden_size)
        self.cross_attention = Spa3VLMCrossAttention(
            hidden_size, config.geometry_num_attention_heads, config.geometry_layer_norm_eps
        )
        self.norm = nn.LayerNorm(hidden_size, eps=config.geometry_layer_norm_eps)
        self.adaptor = Spa3VLMGeometryAdaptor(hidden_size, config.geometry_adaptor_ratio)
        self.gate_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, image_embeds: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # image_embeds (S, N, C) (rows past a scene's own N are padding and stay independent), latents (S, Q, D)
        geometry = self.projector(latents.to(image_embeds.dtype))  # (S, Q, C)
        x = self.norm(self.cross_attention(image_embeds, geometry))  # (S, N, C)
        return image_embeds + self.adaptor(x) * torch.sigmoid(self.gate_proj(x))


def scene_sizes(
    geometry_pixel_values: torch.Tensor, geometry_scene_sizes: torch.Tensor | None
) -> list[tuple[int, int, int]]:
    """(V, H, W) of every scene; a 5-D (S, V, 3, H, W) input without sizes is S scenes of V views."""
    if geometry_scene_sizes is not None:
        if geometry_pixel_values.ndim != 4:
            raise ValueError(
                "with geometry_scene_sizes, geometry_pixel_values must be (num_views, 3, H, W), got shape "
                f"{tuple(geometry_pixel_values.shape)}"
            )
        return [tuple(size) for size in geometry_scene_sizes.tolist()]
    if geometry_pixel_values.ndim == 5:
        num_scenes, num_views, _, height, width = geometry_pixel_values.shape
        return [(num_views, height, width)] * num_scenes
    if geometry_pixel_values.ndim == 4:
        num_views, _, height, width = geometry_pixel_values.shape
        return [(num_views, height, width)]
    raise ValueError(
        f"geometry_pixel_values must be (num_views, 3, H, W) or (S, V, 3, H, W), got {tuple(geometry_pixel_values.shape)}"
    )


def split_scenes(
    geometry_pixel_values: torch.Tensor, sizes: list[tuple[int, int, int]], patch_size: int
) -> list[torch.Tensor]:
    """The views of every scene, (V_s, 3, H_s, W_s) each, cut from the padded (num_views, 3, H, W) tensor."""
    if geometry_pixel_values.ndim == 5:
        geometry_pixel_values = geometry_pixel_values.flatten(0, 1)
    num_views = sum(size[0] for size in sizes)
    if num_views != geometry_pixel_values.shape[0]:
        raise ValueError(
            f"the geometry scenes hold {num_views} views but geometry_pixel_values has "
            f"{geometry_pixel_values.shape[0]}"
        )
    scenes, start = [], 0
    for views, height, width in sizes:
        if views < 1:
            raise ValueError(f"a geometry scene needs at least one view, got sizes {sizes}")
        if height % patch_size or width % patch_size:
            raise ValueError(f"geometry view size {height}x{width} is not divisible by the patch size {patch_size}")
        if height > geometry_pixel_values.shape[-2] or width > geometry_pixel_values.shape[-1]:
            raise ValueError(
                f"geometry scene size {height}x{width} exceeds geometry_pixel_values "
                f"{tuple(geometry_pixel_values.shape[-2:])}"
            )
        scenes.append(geometry_pixel_values[start : start + views, :, :height, :width])
        start += views
    return scenes


class GeometryFusionMixin:
    """
    Spa3R encoding and per-scene fusion for a VLM model class that owns `geometry_encoder` and `geometry_fusion`.
    Also mixed into the backbone's pre-trained class for weight init (zeroed adaptor output) and the freeze.
    """

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.apply_geometry_freeze()  # loading re-creates parameters with requires_grad=True
        return loaded

    @classmethod
    def from_qwen_and_spa3r(cls, qwen_path, spa3r_path, geometry_overrides: dict | None = None, **kwargs):
        r"""
        Start SFT from a base VLM checkpoint (the backbone `cls.config_class.base_config_class` reads) and a Spa3R
        checkpoint (a `Spa3RModel` or `Spa3RForPretraining` directory): the backbone's and Spa3R's weights are
        loaded, the fusion is freshly initialised (its adaptor output is zero, so the new model gives exactly the
        base model's outputs). `geometry_overrides` are extra config fields. Instead of transformers' load report
        (which would list every Spa3R and fusion key as missing from the base checkpoint), one line says what was
        loaded, and any other missing, unexpected or mismatched key is a warning.
        """
        with _quiet_load_reports():
            spa3r = Spa3RModel.from_pretrained(spa3r_path)
            base_config = cls.config_class.base_config_class.from_pretrained(qwen_path)
            config = cls.config_class.from_qwen_config(base_config, geometry_config=spa3r.config, **(geometry_overrides or {}))
            wants_info = kwargs.pop("output_loading_info", False)
            model, info = cls.from_pretrained(qwen_path, config=config, output_loading_info=True, **kwargs)
        model.model.geometry_encoder.load_state_dict(spa3r.state_dict(), strict=True)
        model.model.geometry_encoder.to(model.dtype)
        unexpected_missing = sorted(k for k in info["missing_keys"] if not k.startswith(GEOMETRY_PREFIXES))
        for kind, keys in (("missing", unexpected_missing), ("unexpected", sorted(info["unexpected_keys"])),
                           ("mismatched", sorted(str(k) for k in info["mismatched_keys"]))):  # fmt: skip
            if keys:
                logger.warning(f"{qwen_path}: {len(keys)} {kind} keys for {cls.__name__}: {keys}")
        logger.info(
            f"{cls.__name__}: backbone from {qwen_path}, Spa3R encoder from {spa3r_path} "
            f"({len(spa3r.state_dict())} tensors), geometry fusion freshly initialised (adaptor output zero)"
        )
        return (model, info) if wants_info else model

    def apply_geometry_freeze(self) -> None:
        """`requires_grad=False` on the Spa3R encoder when `config.freeze_geometry_encoder`."""
        if self.config.freeze_geometry_encoder:
            for module in self.modules():
                if isinstance(module, Spa3RModel):
                    module.requires_grad_(False)

    def _init_weights(self, module):
        super()._init_weights(module)
        if getattr(module, "zero_init", False):
            init.zeros_(module.weight)
            init.zeros_(module.bias)

    def encode_geometry(self, scenes: list[torch.Tensor]) -> torch.Tensor:
        """Spa3R latents of every scene (list of (V, 3, H, W) in [0, 1]) → (S, Q, D); equal-shaped scenes run batched."""
        groups: dict[tuple, list[int]] = {}
        for index, scene in enumerate(scenes):
            groups.setdefault(tuple(scene.shape), []).append(index)
        latents = [None] * len(scenes)
        encoder_dtype = self.geometry_encoder.dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_geometry_encoder):
            for indices in groups.values():
                batch = torch.stack([scenes[i] for i in indices]).to(encoder_dtype)  # (B_g, V, 3, H, W)
                group_latents = self.geometry_encoder(pixel_values=batch).latents  # (B_g, Q, D)
                for i, scene_latents in zip(indices, group_latents):
                    latents[i] = scene_latents
        return torch.stack(latents)

    def fuse_scene_tokens(
        self, visual_embeds: tuple[torch.Tensor, ...], latents: torch.Tensor, scene_of: list[int]
    ) -> tuple[torch.Tensor, ...]:
        """
        visual_embeds: per image/video (tokens_i, C); `scene_of[i]` is the scene (row of latents (S, Q, D)) that
        item i belongs to. The tokens of a scene are fused together; returns the fused per-item embeddings.
        """
        if len(scene_of) != len(visual_embeds):
            raise ValueError(f"{len(scene_of)} scene indices given for {len(visual_embeds)} images/videos")
        if scene_of and (min(scene_of) < 0 or max(scene_of) >= latents.shape[0]):
            raise ValueError(f"scene indices {scene_of} out of range for {latents.shape[0]} geometry scenes")
        scenes = sorted(set(scene_of))
        members = {scene: [i for i, s in enumerate(scene_of) if s == scene] for scene in scenes}
        scene_tokens = [torch.cat([visual_embeds[i] for i in members[scene]]) for scene in scenes]  # (N_s, C) each
        padded = nn.utils.rnn.pad_sequence(scene_tokens, batch_first=True)  # (S', N_max, C)
        fused = self.geometry_fusion(padded, latents[scenes])  # (S', N_max, C)
        fused_items: list[torch.Tensor | None] = [None] * len(visual_embeds)
        for row, scene in enumerate(scenes):
            lengths = [visual_embeds[i].shape[0] for i in members[scene]]
            for i, item in zip(members[scene], torch.split(fused[row, : sum(lengths)], lengths)):
                fused_items[i] = item
        return tuple(fused_items)


__all__ = [
    "GeometryFusionMixin",
    "Spa3VLMCrossAttention",
    "Spa3VLMGeometryAdaptor",
    "Spa3VLMGeometryFusion",
    "Spa3VLMGeometryProjector",
    "scene_sizes",
    "split_scenes",
]


@contextlib.contextmanager
def _quiet_load_reports():
    """transformers' load reports off: `from_qwen_and_spa3r` reports the keys it expects to miss itself."""
    reporter = logging.getLogger("transformers.modeling_utils")
    level = reporter.level
    reporter.setLevel(logging.ERROR)
    try:
        yield
    finally:
        reporter.setLevel(level)
