"""Configurations of the VGGT backbone and of Spa3R (Predictive Spatial Field Modeling)."""

from typing import Literal

from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

QKNorm = Literal["layernorm", "rmsnorm", "none"]


class VGGTConfig(PreTrainedConfig):
    r"""
    VGGT (Visual Geometry Grounded Transformer): aggregator + camera head + DPT depth/point heads.
    Defaults are facebook/VGGT-1B.

    Args:
        image_size: image size the DINOv2 positional embedding was trained for (518 → a 37×37 grid).
        patch_size: patch size in pixels; H and W of the input must be multiples of it.
        hidden_size: aggregator width C; the aggregated tokens have 2C channels (frame ‖ global).
        num_hidden_layers: number of frame blocks (= number of global blocks).
        num_attention_heads: heads of frame and global attention.
        mlp_ratio: MLP hidden size / width, in every block.
        num_register_tokens: register tokens per frame (the camera token comes in addition).
        layerscale_init: LayerScale init of the aggregator and camera-head blocks.
        rope_theta: base frequency of the 2-D RoPE in frame and global attention.
        patch_embed_type: `"dinov2"` (DINOv2 ViT with registers, as VGGT-1B) or `"conv"` (a single strided conv).
        patch_embed_num_layers / patch_embed_num_heads: depth and heads of the DINOv2 patch-embedding ViT.
        patch_embed_layerscale_init: LayerScale init of the DINOv2 ViT blocks.
        frame_qk_norm / global_qk_norm: per-head q/k normalisation of frame / global attention: `"layernorm"`
            (VGGT-1B), `"rmsnorm"` (weight-only, machine-epsilon; Spa3R's global blocks) or `"none"`.
        camera_head_depth / camera_head_num_heads: trunk blocks and heads of the camera head (width 2C).
        camera_num_iterations: iterative refinement steps of the camera head.
        dpt_features / dpt_out_channels / dpt_intermediate_layers: DPT head widths and the aggregator layers it reads.
        dpt_frames_chunk_size: frames per DPT pass (chunks are independent; bounds memory).
        use_depth_head / use_point_head: which DPT heads exist.
    """

    model_type = "vggt"

    image_size: int = 518
    patch_size: int = 14
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layerscale_init: float = 0.01
    rope_theta: float = 100.0
    patch_embed_type: Literal["dinov2", "conv"] = "dinov2"
    patch_embed_num_layers: int = 24
    patch_embed_num_heads: int = 16
    patch_embed_layerscale_init: float = 1.0
    frame_qk_norm: QKNorm = "layernorm"
    global_qk_norm: QKNorm = "layernorm"
    camera_head_depth: int = 4
    camera_head_num_heads: int = 16
    camera_num_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: list[int] | tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_intermediate_layers: list[int] | tuple[int, ...] = (4, 11, 17, 23)
    dpt_frames_chunk_size: int = 8
    use_depth_head: bool = True
    use_point_head: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.dpt_out_channels = list(self.dpt_out_channels)
        self.dpt_intermediate_layers = list(self.dpt_intermediate_layers)
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if len(self.dpt_out_channels) != 4 or len(self.dpt_intermediate_layers) != 4:
            raise ValueError("dpt_out_channels and dpt_intermediate_layers need exactly 4 entries")
        if max(self.dpt_intermediate_layers) >= self.num_hidden_layers:
            raise ValueError(
                f"dpt_intermediate_layers {self.dpt_intermediate_layers} exceed num_hidden_layers {self.num_hidden_layers}"
            )

    @property
    def aggregated_size(self) -> int:
        """Channels of an aggregated token (frame ‖ global), 2C."""
        return 2 * self.hidden_size


def default_dinov3_vitl16() -> dict:
    """DINOv3 ViT-L/16 (facebook/dinov3-vitl16-pretrain-lvd1689m), the semantic teacher of Spa3R."""
    return dict(
        model_type="dinov3_vit",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=16,
        num_register_tokens=4,
        use_gated_mlp=False,
        query_bias=True,
        key_bias=False,
        value_bias=True,
        rope_theta=100.0,
        pos_embed_rescale=2.0,
        layer_norm_eps=1e-5,
    )


class Spa3RConfig(PreTrainedConfig):
    r"""
    Spa3R: compresses unposed views of a scene into `num_queries` latent tokens of width `hidden_size`, trained by
    predicting the frozen teachers' feature fields of unseen views (PSFM). Defaults are the released hustvl/Spa3R.

    Args:
        vggt_config: the frozen VGGT backbone (aggregator, camera and depth heads). Spa3R's global blocks use
            weight-only RMSNorm q/k norms.
        semantic_teacher_config: config of the frozen semantic teacher (`DINOv3ViTConfig`); `None` means semantic
            targets must be passed to the forward (`semantic_targets`).
        hidden_size: Spa3R width D.
        num_attention_heads: heads of the encoder and decoder transformers.
        num_queries: number of latent queries Q (the latent is (Q, D)).
        num_encoder_layers / num_decoder_layers: depths of the encoder and the PRoPE decoder.
        num_register_tokens: register tokens prepended inside the encoder and decoder.
        mlp_ratio: MLP hidden size / width in encoder, decoder and prediction heads.
        layer_norm_eps: epsilon of the encoder/decoder LayerNorms.
        rope_theta: base frequency of the encoder's 2-D RoPE. prope_theta: base of PRoPE's RoPE blocks.
        semantic_size: channels of the semantic target (DINOv3 ViT-L: 1024).
        semantic_image_size: the semantic teacher sees the views resized to this square size.
        mask_ratio: fraction of views hidden as targets; `int(V * (1 - mask_ratio))` views stay context.
        asymmetric_masking: one view-masked teacher pass (True, the paper) or a context pass plus a full pass (False,
            the released training config).
        save_teachers: keep the frozen teachers in `save_pretrained` checkpoints of the pretraining model.
        train_backbone: train the VGGT aggregator with the rest (a small from-scratch backbone, e.g. on synthetic
            scenes whose targets and cameras come from the batch); it is then no teacher and is always saved.
        geometry_target_size: channels of the geometric target the `geo` head predicts; `None` = the aggregated
            width 2C (the aggregator's features). Set it when geometry targets come from the batch.
        loss_views: where the losses are computed: `"all"` views (the released recipe: context views are
            reconstructed too) or `"target"` views only (every term then needs the latent to carry unseen views).
        sampled_depth_target: compute the depth teacher only at the pixels the patch-resolution depth target keeps
            (every patch_size-th pixel; equal to the full-resolution map resized nearest, within float tolerance)
            instead of at full resolution. Off by default, so the released configuration also produces the
            official's full-resolution intermediate.
        teacher_dtype: dtype of the frozen teachers' passes (aggregator unless `train_backbone`, camera and depth
            heads, semantic teacher): `"float32"`, or `"bfloat16"` (autocast around the teachers only; the student
            and its losses stay float32, the VGGT heads keep their float32 rule).
        view_slot_embeddings: number of context-view slots with a learned embedding added to the encoder's
            projected patch tokens (slot 0 = the first context view), i.e. the most views the encoder tells apart;
            0 = none, the released model. The encoder's positions carry no view index: the released model relies on
            VGGT's pretrained features to tell views apart, which a backbone trained from scratch cannot (measured
            with `spa3r probe`'s latent usage, see bench/bench_psfm_probe.py). In training the views after the first
            take a random ordered subset of slots 1…N−1, so every slot is trained; at inference views take slots
            0…V−1.
        view_slot_scale: the slot embeddings (initialised N(0, initializer_range²) like every embedding) are
            multiplied by this: a from-scratch backbone's projected tokens have norms of ~80, and an unscaled code
            that starts ~500× smaller was not learned in a CPU-length run.
        backbone_supervision_weight: weight of a per-view loss that trains the aggregator's context-view patch
            features to predict their own geometry targets through a linear head (smooth L1 + cosine against the
            rendered normals ‖ depth, `backbone_geo/*` in the logs); 0 = off, the released recipe. Only for a trained
            backbone: it stands in for the geometry pretraining VGGT brings to the released model (depth, points and
            cameras, supervised), which a backbone trained from scratch by PSFM alone does not learn (a linear probe of
            per-patch depth from its features: R² 0.28 after 8000 steps, random init 0.15).
        pretraining_targets: what the fields were pretrained against, recorded by `spa3r pretrain` so tools that
            compare predicted and target fields (`spa3r visualize`, the app) build the same targets: `"teachers"`
            (the frozen teachers' features, the paper) or `"rendered"` (normals ‖ depth and class histograms
            rendered with the scene; needs a scene folder with depth/, normal/, semantic/ maps).
        pretraining_image_width: the view width `spa3r pretrain` trained at (recorded by it); tools that encode
            views (`spa3r probe`, `visualize`, `ask`) resize to `view_width`, this or else VGGT's `image_size`.
    """

    model_type = "spa3r"
    sub_configs_defaults = {
        "vggt_config": SubConfigSpec(config_class=VGGTConfig, init_kwargs={"global_qk_norm": "rmsnorm"}),
        "semantic_teacher_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov3_vit", optional=True),
    }

    vggt_config: dict | PreTrainedConfig | None = None
    semantic_teacher_config: dict | PreTrainedConfig | None = None
    hidden_size: int = 768
    num_attention_heads: int = 12
    num_queries: int = 256
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    num_register_tokens: int = 4
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    rope_theta: float = 100.0
    prope_theta: float = 100.0
    semantic_size: int = 1024
    semantic_image_size: int = 224
    mask_ratio: float = 0.5
    asymmetric_masking: bool = True
    save_teachers: bool = True
    train_backbone: bool = False
    geometry_target_size: int | None = None
    loss_views: Literal["all", "target"] = "all"
    sampled_depth_target: bool = False
    teacher_dtype: Literal["float32", "bfloat16"] = "float32"
    view_slot_embeddings: int = 0
    view_slot_scale: float = 30.0
    backbone_supervision_weight: float = 0.0
    pretraining_targets: Literal["teachers", "rendered"] = "teachers"
    pretraining_image_width: int | None = None
    initializer_range: float = 0.02

    @property
    def view_width(self) -> int:
        """The view width this model's tools encode at: the pretraining width when recorded, else VGGT's image size."""
        return self.pretraining_image_width or self.vggt_config.image_size

    def __post_init__(self, **kwargs):
        if isinstance(self.vggt_config, dict):  # Spa3R's global blocks default to RMSNorm, also for partial dicts
            self.vggt_config = {"global_qk_norm": "rmsnorm", **self.vggt_config}
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 8:
            raise ValueError(f"PRoPE needs a head dim divisible by 8, got {head_dim}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.loss_views not in ("all", "target"):
            raise ValueError(f"loss_views must be 'all' or 'target', got {self.loss_views!r}")
        if self.teacher_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"teacher_dtype must be 'float32' or 'bfloat16', got {self.teacher_dtype!r}")
        if self.view_slot_embeddings < 0:
            raise ValueError(f"view_slot_embeddings must be >= 0 (0 = none), got {self.view_slot_embeddings}")
        if self.backbone_supervision_weight < 0:
            raise ValueError(f"backbone_supervision_weight must be >= 0 (0 = off), got {self.backbone_supervision_weight}")
        if self.backbone_supervision_weight and not self.train_backbone:
            raise ValueError("backbone_supervision_weight trains the aggregator: it needs train_backbone=true")
        if self.pretraining_targets not in ("teachers", "rendered"):
            raise ValueError(f"pretraining_targets must be 'teachers' or 'rendered', got {self.pretraining_targets!r}")
        if self.semantic_teacher_config is not None and self.semantic_teacher_config.hidden_size != self.semantic_size:
            raise ValueError(
                f"semantic_size {self.semantic_size} differs from the teacher's hidden_size "
                f"{self.semantic_teacher_config.hidden_size}"
            )


__all__ = ["VGGTConfig", "Spa3RConfig", "default_dinov3_vitl16"]
