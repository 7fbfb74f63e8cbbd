"""Spa3R: Predictive Spatial Field Modeling (arXiv 2602.21186).

`Spa3RModel` turns unposed views of a scene into a compact latent (B, Q, D). `Spa3RForPretraining` adds what PSFM
training needs: the view split, the frozen teachers (VGGT camera/depth heads and DINOv3), a camera-conditioned
PRoPE decoder that predicts the teachers' feature fields of every view, and the losses.
Notation: B batch, V views, Vc context views, H×W image, h×w patch grid, Np = h·w, A = 2C aggregated width.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_spa3r import Spa3RConfig
from .modeling_vggt import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Aggregator,
    Block,
    CameraHead,
    DPTHead,
    Mlp,
    VGGTPreTrainedModel,
    context_first_order,
    patch_positions,
    run_camera_head,
    run_dpt_head,
    select_views,
    validate_pixel_values,
)
from .validation import check_cameras, check_targets
from .validation import check_view_mask as validate_view_mask

# ---------------------------------------------------------------------------------------------------------------------
# PRoPE: projective positional encoding (arXiv 2507.10496)
# ---------------------------------------------------------------------------------------------------------------------


def _lift(matrix3: torch.Tensor) -> torch.Tensor:
    lifted = torch.zeros(*matrix3.shape[:-2], 4, 4, dtype=matrix3.dtype, device=matrix3.device)
    lifted[..., :3, :3] = matrix3
    lifted[..., 3, 3] = 1.0
    return lifted


def _invert_se3(viewmats: torch.Tensor) -> torch.Tensor:
    rotation_t = viewmats[..., :3, :3].transpose(-1, -2)
    inverse = torch.zeros_like(viewmats)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -(rotation_t @ viewmats[..., :3, 3:4])[..., 0]
    inverse[..., 3, 3] = 1.0
    return inverse


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool) -> torch.Tensor:
    """Split-halves rotation (a, b) → (a·cos + b·sin, b·cos − a·sin); `inverse` turns the other way."""
    a, b = x.chunk(2, dim=-1)
    if inverse:
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return torch.cat((a * cos + b * sin, b * cos - a * sin), dim=-1)


class PRoPE:
    """PRoPE attention for one set of cameras: transforms q/k/v of the spatial tokens, runs SDPA, transforms back.

    Head channels: [0, d/2) projective (d/8 groups of 4, multiplied by Pᵀ for q, P⁻¹ for k and v, P for the output),
    [d/2, 3d/4) RoPE with the patch column, [3d/4, d) RoPE with the patch row. Non-spatial tokens are untouched.

    Args:
        viewmats: (N, C, 4, 4) world→camera per batch entry and camera.
        intrinsics: (N, C, 3, 3) in pixels of an image of size `image_size_hw`.
        grid_hw: patch grid (h, w); spatial tokens come camera-major, row-major inside a camera.
        spatial_mask: (L,) bool marking the C·h·w spatial tokens of the sequence (None: all tokens are spatial).
    """

    def __init__(self, viewmats, intrinsics, image_size_hw, grid_hw, spatial_mask=None, theta: float = 100.0):
        height, width = image_size_hw
        self.grid_h, self.grid_w = grid_hw
        self.num_cameras = viewmats.shape[1]
        self.theta = theta
        self.viewmats, self.intrinsics = viewmats, intrinsics
        self.spatial_mask = spatial_mask
        intrinsics = intrinsics.float()
        fx, fy = intrinsics[..., 0, 0] / width, intrinsics[..., 1, 1] / height
        cx, cy = intrinsics[..., 0, 2] / width - 0.5, intrinsics[..., 1, 2] / height - 0.5
        zero, one = torch.zeros_like(fx), torch.ones_like(fx)
        k_norm = torch.stack((fx, zero, cx, zero, fy, cy, zero, zero, one), -1).view(*fx.shape, 3, 3)
        k_norm_inv = torch.stack((1 / fx, zero, -cx / fx, zero, 1 / fy, -cy / fy, zero, zero, one), -1).view(*fx.shape, 3, 3)
        viewmats = viewmats.float()
        self.projection = _lift(k_norm) @ viewmats  # (N, C, 4, 4) image ← world
        self.projection_inv = _invert_se3(viewmats) @ _lift(k_norm_inv)
        self.spatial_index = None if spatial_mask is None else spatial_mask.nonzero()[:, 0]
        self.spatial_start = None  # set when the spatial tokens are one trailing run: slicing instead of index copies
        if self.spatial_index is not None and len(self.spatial_index):
            first = int(self.spatial_index[0])
            if len(self.spatial_index) == len(spatial_mask) - first and bool(spatial_mask[first:].all()):
                self.spatial_start = first

    def _angles(self, head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        num_freqs = head_dim // 8
        freqs = torch.pow(self.theta, -torch.arange(num_freqs, device=device, dtype=torch.float32) / num_freqs)
        positions = patch_positions(self.grid_h, self.grid_w, device).float()  # (h·w, 2) (row, col)
        return positions[:, 1:] * freqs, positions[:, :1] * freqs  # column angles, row angles: (h·w, d/8)

    def _transform(self, x: torch.Tensor, matrix: torch.Tensor, inverse_rope: bool) -> torch.Tensor:
        """x (N, heads, L, d) → same shape with the spatial tokens transformed."""
        if self.spatial_start is not None:
            spatial = x[:, :, self.spatial_start :]
        else:
            spatial = x if self.spatial_index is None else x[:, :, self.spatial_index]
        batch, heads, length, dim = spatial.shape
        spatial = spatial.view(batch, heads, self.num_cameras, length // self.num_cameras, dim)
        projective, rope_x, rope_y = spatial.split((dim // 2, dim // 4, dim // 4), dim=-1)
        projective = projective.unflatten(-1, (dim // 8, 4))
        projective = torch.einsum("ncij,nhctgj->nhctgi", matrix.to(x.dtype), projective).flatten(-2)
        angles_x, angles_y = self._angles(dim, x.device)
        rope_x = _rotate_pairs(rope_x, angles_x.cos().to(x.dtype), angles_x.sin().to(x.dtype), inverse_rope)
        rope_y = _rotate_pairs(rope_y, angles_y.cos().to(x.dtype), angles_y.sin().to(x.dtype), inverse_rope)
        spatial = torch.cat((projective, rope_x, rope_y), dim=-1).view(batch, heads, length, dim)
        if self.spatial_index is None:
            return spatial
        if self.spatial_start is not None:
            return torch.cat((x[:, :, : self.spatial_start], spatial), dim=2)
        return x.index_copy(2, self.spatial_index, spatial)

    def transform_qkv(self, q, k, v):
        projection_t = self.projection.transpose(-1, -2)
        return (
            self._transform(q, projection_t, inverse_rope=False),
            self._transform(k, self.projection_inv, inverse_rope=False),
            self._transform(v, self.projection_inv, inverse_rope=False),
        )

    def transform_output(self, o):
        return self._transform(o, self.projection, inverse_rope=True)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (N, heads, L, d) → attention output (N, heads, L, d)."""
        return self.transform_output(F.scaled_dot_product_attention(*self.transform_qkv(q, k, v)))


def camera_rays(intrinsics: torch.Tensor, grid_hw: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Unit camera-space ray directions through the patch centres → (B, V, h·w, 3), float32.

    intrinsics: (B, V, 3, 3) in pixels; they are converted to patch units first.
    """
    intrinsics = intrinsics.float()
    fx, fy = (intrinsics[..., 0, 0] / patch_size)[..., None], (intrinsics[..., 1, 1] / patch_size)[..., None]
    cx, cy = (intrinsics[..., 0, 2] / patch_size)[..., None], (intrinsics[..., 1, 2] / patch_size)[..., None]
    centres = patch_positions(*grid_hw, intrinsics.device).float() + 0.5  # (h·w, 2) (row, col)
    directions = torch.stack(
        ((centres[:, 1] - cx) / fx, (centres[:, 0] - cy) / fy, torch.ones_like(fx.expand(-1, -1, centres.shape[0]))), -1
    )
    return F.normalize(directions, dim=-1, eps=1e-3)


# ---------------------------------------------------------------------------------------------------------------------
# Transformer with registers (encoder and decoder)
# ---------------------------------------------------------------------------------------------------------------------


def block_with_shared_rows(block: Block, x: torch.Tensor, num_shared: int, copies: int, attend) -> torch.Tensor:
    """`block(x, attend=attend)` for x (N, L, D) whose first `num_shared` rows repeat over runs of `copies` entries:
    their norm and q/k/v projection are computed once per run and repeated (no positions; rows are equal before
    attention only, so only one block can share)."""
    attention = block.attn
    num, length, dim = x.shape
    shared_q, shared_k, shared_v = attention.project_qkv(block.norm1(x[::copies, :num_shared]))  # (N/copies, heads, S, d)
    own_q, own_k, own_v = attention.project_qkv(block.norm1(x[:, num_shared:]))  # (N, heads, L − S, d)
    q, k, v = (
        torch.cat((shared.repeat_interleave(copies, dim=0), own), dim=2)
        for shared, own in ((shared_q, own_q), (shared_k, own_k), (shared_v, own_v))
    )
    out = attend(q, k, v) if attend is not None else F.scaled_dot_product_attention(q, k, v)
    x = x + block.ls1(attention.proj(out.transpose(1, 2).reshape(num, length, dim)))
    return x + block.ls2(block.mlp(block.norm2(x)))


class Spa3RTransformer(nn.Module):
    """Pre-norm transformer with prepended register tokens and a final LayerNorm; registers are dropped on output.

    The encoder uses 2-D RoPE (positions given before the +1 shift); the decoder passes a `PRoPE` as `attend`.
    """

    def __init__(self, config: Spa3RConfig, depth: int, rope: bool):
        super().__init__()
        dim = config.hidden_size
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.num_attention_heads,
                config.mlp_ratio,
                norm_eps=config.layer_norm_eps,
                qk_norm="rmsnorm",
                rope_theta=config.rope_theta if rope else None,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x, positions=None, attend=None, output_hidden_states: bool = False, shared_rows: int = 0, copies: int = 1):
        """x (N, L, D); positions (N, L, 2) or None → (N, L, D) and the block outputs (N, R + L, D) if asked.

        `shared_rows` leading rows of x that are equal across each run of `copies` consecutive entries (the
        decoder's latent rows, repeated per view): the first block normalises and projects them once per run.
        """
        num, num_registers = x.shape[0], self.register_tokens.shape[1]
        x = torch.cat((self.register_tokens.expand(num, -1, -1).to(x.dtype), x), dim=1)
        if positions is not None:
            positions = torch.cat((positions.new_zeros(num, num_registers, 2), positions + 1), dim=1)
        hidden_states = []
        for index, block in enumerate(self.blocks):
            checkpointed = block.gradient_checkpointing and block.training
            if index == 0 and copies > 1 and positions is None and not checkpointed:
                x = block_with_shared_rows(block, x, num_registers + shared_rows, copies, attend)
            else:
                x = block(x, positions, attend)
            if output_hidden_states:
                hidden_states.append(x)
        return self.norm(x)[:, num_registers:], tuple(hidden_states) if output_hidden_states else None


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Spa3RModelOutput(ModelOutput):
    """
    Args:
        latents: (B, Q, D) the spatial latent (what Spa3-VLM consumes).
        last_hidden_state: (B, Q + V·Np, D) encoder output (queries, then every view's patch tokens).
        hidden_states: per encoder block (B, R + Q + V·Np, D), registers included, when asked.
    """

    latents: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class Spa3RForPretrainingOutput(ModelOutput):
    """
    Args:
        loss: scalar sum of every term in `losses`.
        losses: `{"geo/l1", "geo/cos", "sem/l1", "sem/cos", "depth_prob"}` → scalar, over the views
            `config.loss_views` selects; with `config.backbone_supervision_weight` also `backbone_geo/l1` and
            `backbone_geo/cos` (weighted, context views).
        representation_loss: sum of the PSFM terms that train the encoder and decoder (all but `PROBE_LOSS_TERMS`
            and the backbone supervision).
        probe_loss: sum of the detached probe terms (`PROBE_LOSS_TERMS`; they train only their own head).
        latents: (B, Q, D) latent of the context views.
        view_mask: (B, V) bool, True = target view.
        extrinsics: (B, V, 3, 4) world→camera relative to the first context view; intrinsics (B, V, 3, 3) pixels
            (from the camera head, or the batch's re-expressed by `relative_to_first_context_view`).
        pred_geo: (B, V, Np, A), pred_sem (B, V, Np, Cs), pred_depth (B, V, Np, 1) for every view.
        target_geo: (B, V, Np, A), target_sem (B, V, Np, Cs), target_depth (B, V, Np, 1).
        context_features: (B, Vc, Np, A) aggregator features the encoder saw.
        decoder_output: (B, V, Np, D) decoder output of the ray tokens.
        pose_encodings: camera-head encodings per iteration (B, V, 9), when computed.
        encoder_hidden_states / decoder_hidden_states: per block, registers included, when asked.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    representation_loss: torch.Tensor | None = None
    probe_loss: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    view_mask: torch.Tensor | None = None
    extrinsics: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    pred_geo: torch.Tensor | None = None
    pred_sem: torch.Tensor | None = None
    pred_depth: torch.Tensor | None = None
    target_geo: torch.Tensor | None = None
    target_sem: torch.Tensor | None = None
    target_depth: torch.Tensor | None = None
    context_features: torch.Tensor | None = None
    decoder_output: torch.Tensor | None = None
    pose_encodings: tuple[torch.Tensor, ...] | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def teacher_precision(config: Spa3RConfig, like: torch.Tensor, frozen: bool = True):
    """Autocast to `config.teacher_dtype` around a frozen teacher's pass (no change for float32 or a trained module)."""
    if not frozen or config.teacher_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=like.device.type, dtype=getattr(torch, config.teacher_dtype))


class Spa3RPreTrainedModel(VGGTPreTrainedModel):
    config_class = Spa3RConfig
    base_model_prefix = "spa3r"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        r"""
        A transformers checkpoint, or the authors' Lightning `spa3r.ckpt` (a folder or Hub repo holding it, e.g.
        `hustvl/Spa3-VLM`; `filename=` / `subfolder=` as needed), converted in memory (see `official.py`).
        """
        from .official import load_official_spa3r, official_spa3r_checkpoint

        checkpoint = official_spa3r_checkpoint(pretrained_model_name_or_path, kwargs)
        if checkpoint is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return load_official_spa3r(cls, checkpoint, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Spa3RTransformer):
            nn.init.normal_(module.register_tokens, std=1e-6)


class Spa3RModel(Spa3RPreTrainedModel):
    """VGGT aggregator (frozen unless `config.train_backbone`) → projection (+ a code per context view with
    `config.view_slot_embeddings`, for from-scratch backbones) → queries + encoder → latent (B, Q, D)."""

    def __init__(self, config: Spa3RConfig):
        super().__init__(config)
        vggt = config.vggt_config
        self.aggregator = Aggregator(vggt)
        self.aggregator.requires_grad_(config.train_backbone)
        self.projection = nn.Linear(vggt.aggregated_size, config.hidden_size)
        self.query_embed = nn.Embedding(config.num_queries, config.hidden_size)
        self.view_slot_embed = (
            nn.Embedding(config.view_slot_embeddings, config.hidden_size) if config.view_slot_embeddings else None
        )
        self.encoder = Spa3RTransformer(config, config.num_encoder_layers, rope=True)
        self.post_init()

    def aggregate(self, pixel_values: torch.Tensor, view_mask=None, keep_layers=None) -> list:
        """Aggregator pass (gradients only with `config.train_backbone`) → per-layer tokens (B, V, P, A) in the
        dtype of `pixel_values` unless an outer autocast says otherwise. A frozen aggregator runs in
        `config.teacher_dtype`."""
        frozen = not self.config.train_backbone
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen), teacher_precision(self.config, pixel_values, frozen):
            tokens = self.aggregator(pixel_values, view_mask=view_mask, keep_layers=keep_layers)
        if frozen and self.config.teacher_dtype != "float32":
            tokens = [None if t is None else t.to(pixel_values.dtype) for t in tokens]
        return tokens

    def view_slots(self, num_views: int, randomise: bool = False) -> torch.Tensor:
        """Slot of each context view (V,): 0…V−1, or (`randomise`, PSFM training) 0 and a random ordered subset of
        1…N−1, so that every slot is trained."""
        num_slots = self.config.view_slot_embeddings
        device = self.view_slot_embed.weight.device
        if num_views > num_slots:
            raise ValueError(
                f"{num_views} context views, but this model tells at most view_slot_embeddings={num_slots} views apart"
            )
        if not randomise:
            return torch.arange(num_views, device=device)
        others = torch.randperm(num_slots - 1, device=device)[: num_views - 1].sort().values + 1
        return torch.cat((torch.zeros(1, dtype=torch.long, device=device), others))

    def encode(
        self, features: torch.Tensor, grid_hw: tuple[int, int], output_hidden_states: bool = False,
        random_view_slots: bool = False,
    ) -> Spa3RModelOutput:
        """Aggregator patch features (B, V, Np, A) of the context views → latent (B, Q, D). `random_view_slots`:
        random slots for the views after the first (`config.view_slot_embeddings`; PSFM training)."""
        batch, num_views, num_patches, _ = features.shape
        tokens = self.projection(features)  # (B, V, Np, D)
        if self.view_slot_embed is not None:
            slot_codes = self.view_slot_embed(self.view_slots(num_views, random_view_slots))  # (V, D)
            tokens = tokens + self.config.view_slot_scale * slot_codes[:, None].to(tokens.dtype)
        tokens = tokens.flatten(1, 2)  # (B, V·Np, D)
        queries = self.query_embed.weight.to(tokens.dtype).expand(batch, -1, -1)  # (B, Q, D)
        sequence = torch.cat((queries, tokens), dim=1)
        query_positions = torch.full((queries.shape[1], 2), -1, dtype=torch.long, device=tokens.device)
        view_positions = patch_positions(*grid_hw, tokens.device).repeat(num_views, 1)  # (V·Np, 2), no view index
        positions = torch.cat((query_positions, view_positions)).expand(batch, -1, -1)
        encoded, hidden_states = self.encoder(sequence, positions, output_hidden_states=output_hidden_states)
        return Spa3RModelOutput(
            latents=encoded[:, : self.config.num_queries], last_hidden_state=encoded, hidden_states=hidden_states
        )

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, return_dict: bool = True, **kwargs
    ) -> Spa3RModelOutput:
        """pixel_values (B, V, 3, H, W) in [0, 1], H and W multiples of 14 → latents (B, Q, D)."""
        validate_pixel_values(pixel_values, self.config.vggt_config.patch_size)
        patch_size = self.config.vggt_config.patch_size
        grid_hw = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
        last_layer = self.config.vggt_config.num_hidden_layers - 1
        tokens = self.aggregate(pixel_values, keep_layers={last_layer})[-1]
        features = tokens[:, :, self.aggregator.patch_start_idx :]
        return self.encode(features, grid_hw, bool(output_hidden_states))


class SemanticTeacher(nn.Module):
    """Frozen DINOv3 ViT: normalised (N, 3, S, S) images → final-normed patch tokens as a map (N, C, S/16, S/16)."""

    def __init__(self, config):
        super().__init__()
        from transformers import DINOv3ViTModel

        self.model = DINOv3ViTModel(config)
        self.num_prefix_tokens = 1 + config.num_register_tokens
        self.patch_size = config.patch_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=pixel_values).last_hidden_state[:, self.num_prefix_tokens :]
        grid_h, grid_w = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        return hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[-1], grid_h, grid_w)


def sample_view_mask(batch: int, num_views: int, mask_ratio: float, generator=None, device=None) -> torch.Tensor:
    """Random split (B, V) bool, True = target: view 0 is context plus `int(V·(1−r)) − 1` random others."""
    num_context = int(num_views * (1 - mask_ratio))
    if not 1 <= num_context < num_views:
        raise ValueError(
            f"mask_ratio {mask_ratio} with {num_views} views gives {num_context} context views; need 1 to {num_views - 1}"
        )
    scores = torch.rand(batch, num_views - 1, generator=generator, device=device)
    context_others = scores.argsort(dim=1)[:, : num_context - 1] + 1
    view_mask = torch.ones(batch, num_views, dtype=torch.bool, device=device)
    view_mask[:, 0] = False
    view_mask.scatter_(1, context_others, False)
    return view_mask


def relative_to_first_context_view(extrinsics: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
    """
    World→camera extrinsics (B, V, 3, 4) in any world frame → the same cameras in the canonical frame: the camera
    frame of each sample's first context view (VGGT's convention; that view becomes [I | 0]). E_v ↦ E_v · E_ref⁻¹.
    A rigid motion of the whole scene leaves the result unchanged. view_mask (B, V) bool, True = target.
    """
    reference = context_first_order(view_mask)[:, 0]  # (B,)
    rows = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64, device=extrinsics.device)
    world_to_camera = torch.cat((extrinsics.double(), rows.expand(*extrinsics.shape[:2], 1, 4)), dim=-2)  # (B, V, 4, 4)
    reference_inverse = _invert_se3(world_to_camera[torch.arange(len(reference)), reference])  # (B, 4, 4)
    return (world_to_camera @ reference_inverse[:, None])[..., :3, :].to(extrinsics.dtype)


def smooth_l1_and_cosine(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = pred.float(), target.float()
    cosine = (F.normalize(pred, dim=-1) * F.normalize(target, dim=-1)).sum(-1)
    return F.smooth_l1_loss(pred, target), (1 - cosine).mean()


#: loss terms that only probe the representation (computed on detached decoder outputs; they train their own head)
PROBE_LOSS_TERMS = ("depth_prob",)


class Spa3RForPretraining(Spa3RPreTrainedModel):
    """
    PSFM pretraining: encode the context views, decode the teachers' feature fields of the views from cameras.

    Camera convention: every camera the decoder sees is world→camera relative to the sample's first context view
    (that view's camera frame is the world; VGGT's convention). Teacher cameras come from VGGT's camera head, which
    predicts them in this frame. Cameras passed to `forward` (e.g. ground-truth poses of scene folders, in the
    scene's own world frame) are re-expressed in it by `relative_to_first_context_view`, so a rigid motion of the
    whole scene leaves the loss and predictions unchanged. Geometric targets are per-camera quantities (teacher
    features, rendered camera-frame normals and depth), so they need no conversion. Scale is not normalised:
    rendered depth is metric, and rescaling the scene changes the targets (and the loss) on purpose.
    Loss placement (`config.loss_views`): every view (the released recipe) or the target views only.
    """

    def __init__(self, config: Spa3RConfig):
        super().__init__(config)
        vggt = config.vggt_config
        dim = config.hidden_size
        hidden = int(dim * config.mlp_ratio)
        self.spa3r = Spa3RModel(config)
        self.camera_head = CameraHead(vggt)
        self.depth_head = DPTHead(vggt, output_dim=2, activation="exp")
        self.pose_tokenizer = nn.Linear(3, dim)
        self.decoder = Spa3RTransformer(config, config.num_decoder_layers, rope=False)
        geometry_size = config.geometry_target_size or vggt.aggregated_size
        self.heads = nn.ModuleDict({"geo": Mlp(dim, hidden, geometry_size), "sem": Mlp(dim, hidden, config.semantic_size)})
        self.depth_prob = Mlp(dim, hidden, 1)
        self.backbone_geo = (
            nn.Linear(vggt.aggregated_size, geometry_size) if config.backbone_supervision_weight else None
        )
        self.semantic_teacher = (
            SemanticTeacher(config.semantic_teacher_config) if config.semantic_teacher_config is not None else None
        )
        for teacher in self.teachers().values():
            teacher.requires_grad_(False)
        if not config.save_teachers:
            self._keys_to_ignore_on_save = {f"{name}.{key}" for name, module in self.teachers().items() for key in module.state_dict()}
            self._keys_to_ignore_on_load_missing = [rf"^{name.replace('.', '[.]')}[.]" for name in self.teachers()]
        self.post_init()

    def train(self, mode: bool = True):
        """Teachers stay in eval mode (DINOv3's RoPE augments positions randomly in training mode)."""
        super().train(mode)
        for teacher in self.teachers().values():
            teacher.eval()
        return self

    def teachers(self) -> dict[str, nn.Module]:
        """The frozen teacher modules by state-dict prefix (the aggregator is one unless `config.train_backbone`)."""
        modules = {} if self.config.train_backbone else {"spa3r.aggregator": self.spa3r.aggregator}
        modules.update(camera_head=self.camera_head, depth_head=self.depth_head)
        if self.semantic_teacher is not None:
            modules["semantic_teacher"] = self.semantic_teacher
        return modules

    def load_teachers(self, path) -> list[str]:
        """
        Copy the frozen teachers from a Spa3R pretraining checkpoint directory that holds them (e.g. a converted
        checkpoint saved with `save_teachers=True`). Every teacher must be complete there; returns their prefixes.
        """
        source, info = type(self).from_pretrained(path, save_teachers=True, output_loading_info=True)
        missing = [key for key in info["missing_keys"] if key.startswith(tuple(f"{name}." for name in self.teachers()))]
        if missing:
            raise ValueError(f"the teachers in {path} are incomplete: {len(missing)} missing keys, e.g. {sorted(missing)[:3]}")
        for name, module in self.teachers().items():
            module.load_state_dict(source.get_submodule(name).state_dict(), strict=True)
        return sorted(self.teachers())

    def semantic_targets(self, pixel_values: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """DINOv3 patch features of every view on the aggregator's patch grid → (B, V, Np, Cs)."""
        if self.semantic_teacher is None:
            raise ValueError("no semantic teacher configured: pass `semantic_targets` (B, V, h*w, C) to forward")
        batch, num_views = pixel_values.shape[:2]
        size = self.config.semantic_image_size
        images = F.interpolate(pixel_values.flatten(0, 1), (size, size), mode="bilinear", align_corners=False)
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad(), teacher_precision(self.config, images):
            features = self.semantic_teacher((images - mean) / std)  # (B·V, Cs, S/16, S/16)
        features = F.interpolate(features.to(images.dtype), grid_hw, mode="bilinear", align_corners=False)
        return features.flatten(2).transpose(1, 2).reshape(batch, num_views, grid_hw[0] * grid_hw[1], -1)

    def depth_target(self, tokens: list, image_size_hw: tuple[int, int]) -> torch.Tensor:
        """DPT depth teacher → depth at patch resolution (B, V, Np, 1): the full-resolution map resized nearest
        (pixel p·i, p·j of each patch), or with `config.sampled_depth_target` computed only at those pixels."""
        tokens = [None if t is None else t.detach() for t in tokens]
        start = self.spa3r.aggregator.patch_start_idx
        sampled = self.config.sampled_depth_target
        depth, _ = run_dpt_head(self.depth_head, tokens, start, image_size_hw, at_patch_stride=sampled)  # (B, V, h|H, w|W, 1)
        if not sampled:
            grid_hw = tuple(size // self.config.vggt_config.patch_size for size in image_size_hw)
            depth = F.interpolate(depth.flatten(0, 1).permute(0, 3, 1, 2), grid_hw, mode="nearest")
            depth = depth.permute(0, 2, 3, 1).reshape(*tokens[-1].shape[:2], *grid_hw, 1)
        return depth.flatten(2, 3)

    @torch.no_grad()
    def teacher_fields(self, pixel_values: torch.Tensor, tokens: list | None, **given) -> dict:
        """
        The frozen teachers' targets and cameras for (B, V, 3, H, W) views from `tokens`, the aggregator's
        per-layer tokens of the pass over all views (None if every field is given). Fields in `given` that are not
        None are kept → geometry_targets (B, V, Np, A), depth_targets (B, V, Np, 1), semantic_targets
        (B, V, Np, Cs), extrinsics (B, V, 3, 4) and intrinsics (B, V, 3, 3) in the camera head's frame,
        pose_encodings (the camera head's iterations, or None when the cameras are given).
        """
        patch_size = self.config.vggt_config.patch_size
        image_size_hw = tuple(pixel_values.shape[-2:])
        grid_hw = (image_size_hw[0] // patch_size, image_size_hw[1] // patch_size)
        fields = {key: given.get(key) for key in ("geometry_targets", "depth_targets", "semantic_targets", "extrinsics", "intrinsics")}
        fields["pose_encodings"] = None
        if fields["geometry_targets"] is None:
            fields["geometry_targets"] = tokens[-1][:, :, self.spa3r.aggregator.patch_start_idx :].detach()
        if fields["extrinsics"] is None:
            fields["pose_encodings"], fields["extrinsics"], fields["intrinsics"] = run_camera_head(
                self.camera_head, tokens[-1].detach(), image_size_hw
            )
        if fields["depth_targets"] is None:
            fields["depth_targets"] = self.depth_target(tokens, image_size_hw)
        if fields["semantic_targets"] is None:
            fields["semantic_targets"] = self.semantic_targets(pixel_values, grid_hw)
        return fields

    def decode(self, latents, extrinsics, intrinsics, image_size_hw, grid_hw, output_hidden_states=False):
        """Latent (B, Q, D) + per-view cameras → decoder output for every view's ray tokens (B, V, Np, D)."""
        batch, num_views = extrinsics.shape[:2]
        patch_size = self.config.vggt_config.patch_size
        rays = camera_rays(intrinsics, grid_hw, patch_size).flatten(0, 1)  # (B·V, Np, 3)
        ray_tokens = self.pose_tokenizer(rays.to(self.pose_tokenizer.weight.dtype))
        repeated = latents.repeat_interleave(num_views, dim=0).to(ray_tokens.dtype)  # (B·V, Q, D)
        sequence = torch.cat((repeated, ray_tokens), dim=1)
        num_registers, num_queries = self.config.num_register_tokens, latents.shape[1]
        spatial_mask = torch.zeros(num_registers + sequence.shape[1], dtype=torch.bool, device=sequence.device)
        spatial_mask[num_registers + num_queries :] = True
        viewmats = torch.eye(4, device=extrinsics.device).repeat(batch * num_views, 1, 1)
        viewmats[:, :3] = extrinsics.flatten(0, 1).float()
        prope = PRoPE(
            viewmats[:, None], intrinsics.flatten(0, 1)[:, None], image_size_hw, grid_hw, spatial_mask, self.config.prope_theta
        )
        decoded, hidden_states = self.decoder(
            sequence, attend=prope, output_hidden_states=output_hidden_states, shared_rows=num_queries, copies=num_views
        )
        return decoded[:, num_queries:].reshape(batch, num_views, -1, decoded.shape[-1]), hidden_states

    def forward(
        self,
        pixel_values: torch.Tensor,
        view_mask: torch.Tensor | None = None,
        semantic_targets: torch.Tensor | None = None,
        geometry_targets: torch.Tensor | None = None,
        depth_targets: torch.Tensor | None = None,
        extrinsics: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        asymmetric_masking: bool | None = None,
        canonical_cameras: bool = False,
        return_loss: bool = True,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> Spa3RForPretrainingOutput:
        """
        pixel_values: (B, V, 3, H, W) in [0, 1], V ≥ 2.
        view_mask: (B, V) bool, True = target; sampled with `config.mask_ratio` when omitted.
        semantic_targets: (B, V, h·w, Cs) semantic target fields (skips the DINOv3 pass).
        geometry_targets: (B, V, h·w, Cg) geometric target fields (instead of the aggregator's features).
        depth_targets: (B, V, h·w, 1) depth at patch resolution (skips the DPT depth head).
        extrinsics / intrinsics: (B, V, 3, 4) world→camera in any world frame and (B, V, 3, 3) pixels, e.g.
            ground-truth poses (skip the camera head); both or neither. Re-expressed relative to the first context
            view (see the class docstring).
        asymmetric_masking: overrides `config.asymmetric_masking`.
        canonical_cameras: the given cameras are already the decoder's (the camera head's teacher cameras, e.g.
            from a teacher cache): used as given, not re-expressed.
        """
        vggt = self.config.vggt_config
        validate_pixel_values(pixel_values, vggt.patch_size, min_views=2)
        batch, num_views, _, height, width = pixel_values.shape
        image_size_hw, grid_hw = (height, width), (height // vggt.patch_size, width // vggt.patch_size)
        num_patches = grid_hw[0] * grid_hw[1]
        if view_mask is None:
            view_mask = sample_view_mask(batch, num_views, self.config.mask_ratio, device=pixel_values.device)
        validate_view_mask(view_mask, batch, num_views)
        targets = {"semantic_targets": semantic_targets, "geometry_targets": geometry_targets, "depth_targets": depth_targets}
        channels = {"semantic_targets": self.config.semantic_size, "depth_targets": 1,
                    "geometry_targets": self.config.geometry_target_size or vggt.aggregated_size}  # fmt: skip
        check_targets(targets, batch, num_views, num_patches, channels)
        check_cameras(extrinsics, intrinsics, batch, num_views)
        if extrinsics is not None and not canonical_cameras:
            extrinsics = relative_to_first_context_view(extrinsics, view_mask)
        asymmetric = self.config.asymmetric_masking if asymmetric_masking is None else asymmetric_masking
        context_views = context_first_order(view_mask)[:, : int((~view_mask[0]).sum())]
        start = self.spa3r.aggregator.patch_start_idx
        last_layer = vggt.num_hidden_layers - 1
        keep = {last_layer} if depth_targets is not None else set(vggt.dpt_intermediate_layers) | {last_layer}
        needs_full_pass = geometry_targets is None or depth_targets is None or extrinsics is None

        # aggregator (a frozen teacher unless config.train_backbone) and frozen teachers
        tokens = None
        if asymmetric:
            tokens = self.spa3r.aggregate(pixel_values, view_mask=view_mask, keep_layers=keep)
            context_features = select_views(tokens[-1][:, :, start:], context_views)
        else:
            context_images = select_views(pixel_values, context_views)
            context_tokens = self.spa3r.aggregate(context_images, keep_layers={last_layer})
            context_features = context_tokens[-1][:, :, start:]
            if needs_full_pass:
                tokens = self.spa3r.aggregate(pixel_values, keep_layers=keep)
        fields = self.teacher_fields(
            pixel_values, tokens, geometry_targets=geometry_targets, depth_targets=depth_targets,
            semantic_targets=semantic_targets, extrinsics=extrinsics, intrinsics=intrinsics,
        )  # fmt: skip
        target_geo, depth_targets, semantic_targets = (fields[key] for key in ("geometry_targets", "depth_targets", "semantic_targets"))
        extrinsics, intrinsics, pose_encodings = fields["extrinsics"], fields["intrinsics"], fields["pose_encodings"]

        # student
        encoded = self.spa3r.encode(context_features, grid_hw, bool(output_hidden_states), random_view_slots=self.training)
        decoder_output, decoder_hidden = self.decode(
            encoded.latents, extrinsics, intrinsics, image_size_hw, grid_hw, bool(output_hidden_states)
        )
        pred_geo = self.heads["geo"](decoder_output)
        pred_sem = self.heads["sem"](decoder_output)
        pred_depth = self.depth_prob(decoder_output.detach())  # probe: does not shape the representation

        loss = losses = representation_loss = probe_loss = None
        if return_loss:
            pairs = {"geo": (pred_geo, target_geo), "sem": (pred_sem, semantic_targets), "depth": (pred_depth, depth_targets)}
            if self.config.loss_views == "target":
                pairs = {name: (pred[view_mask], target[view_mask]) for name, (pred, target) in pairs.items()}
            geo_l1, geo_cos = smooth_l1_and_cosine(*pairs["geo"])
            sem_l1, sem_cos = smooth_l1_and_cosine(*pairs["sem"])
            depth_loss = F.smooth_l1_loss(pairs["depth"][0].float(), pairs["depth"][1].float())
            losses = {"geo/l1": geo_l1, "geo/cos": geo_cos, "sem/l1": sem_l1, "sem/cos": sem_cos, "depth_prob": depth_loss}
            representation_loss = sum(value for name, value in losses.items() if name not in PROBE_LOSS_TERMS)
            if self.backbone_geo is not None:  # the context views' own geometry from their aggregator features
                context_geo = select_views(target_geo, context_views)  # (B, Vc, Np, Cg)
                backbone_l1, backbone_cos = smooth_l1_and_cosine(self.backbone_geo(context_features), context_geo)
                losses["backbone_geo/l1"] = self.config.backbone_supervision_weight * backbone_l1
                losses["backbone_geo/cos"] = self.config.backbone_supervision_weight * backbone_cos
            loss = sum(losses.values())
            probe_loss = sum(losses[name] for name in PROBE_LOSS_TERMS)
        return Spa3RForPretrainingOutput(
            loss=loss,
            losses=losses,
            representation_loss=representation_loss,
            probe_loss=probe_loss,
            latents=encoded.latents,
            view_mask=view_mask,
            extrinsics=extrinsics,
            intrinsics=intrinsics,
            pred_geo=pred_geo,
            pred_sem=pred_sem,
            pred_depth=pred_depth,
            target_geo=target_geo,
            target_sem=semantic_targets,
            target_depth=depth_targets,
            context_features=context_features,
            decoder_output=decoder_output,
            pose_encodings=tuple(pose_encodings) if pose_encodings is not None else None,
            encoder_hidden_states=encoded.hidden_states,
            decoder_hidden_states=decoder_hidden,
        )


__all__ = [
    "PROBE_LOSS_TERMS",
    "PRoPE",
    "Spa3RForPretraining",
    "Spa3RForPretrainingOutput",
    "Spa3RModel",
    "Spa3RModelOutput",
    "Spa3RPreTrainedModel",
    "camera_rays",
    "relative_to_first_context_view",
    "sample_view_mask",
]
