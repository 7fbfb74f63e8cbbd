"""VGGT backbone: aggregator (alternating frame/global attention), camera head and DPT heads.

Re-implemented from the description in `shared/spec/vggt.md` so that converted facebook/VGGT-1B weights give the
same numbers. Module and parameter names follow the original checkpoint so conversion is a key-prefix change.
Notation: B batch, S frames (views), P tokens per frame, C width, h×w patch grid.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_spa3r import VGGTConfig
from .validation import check_pixel_values as validate_pixel_values  # also used by modeling_spa3r
from .validation import check_view_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------------------
# Rotary position embeddings
# ---------------------------------------------------------------------------------------------------------------------


def patch_positions(height: int, width: int, device=None) -> torch.Tensor:
    """(row, col) of every patch of an h×w grid, row-major → (h·w, 2) int64."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    return torch.cartesian_prod(rows, cols)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _rope_1d(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE of `x` (..., L, d) with integer `positions` (N, L) broadcast over heads."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=x.device).float() / dim))
    angles = (positions.float()[..., None] * inv_freq).to(x.dtype)  # (N, L, d/2), rounded to the token dtype
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # (N, 1, L, d)
    return x * angles.cos() + _rotate_half(x) * angles.sin()


def apply_rope_2d(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """VGGT's 2-D RoPE: first half of each head rotated by the row, second half by the column.

    x: (N, heads, L, head_dim); positions: (N, L, 2) integer (row, col).
    """
    y_half, x_half = x.chunk(2, dim=-1)
    return torch.cat((_rope_1d(y_half, positions[..., 0], theta), _rope_1d(x_half, positions[..., 1], theta)), dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Transformer block
# ---------------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.RMSNorm):
    """Weight-only RMSNorm whose weight follows the input dtype, so bf16 inputs keep the fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


def make_qk_norm(kind: str, head_dim: int) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(head_dim, eps=1e-5)
    if kind == "rmsnorm":
        return RMSNorm(head_dim, eps=None)  # eps=None: machine epsilon of the input dtype
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown q/k norm {kind!r}: expected 'layernorm', 'rmsnorm' or 'none'")


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.init_value = float(init_value)
        self.gamma = nn.Parameter(torch.full((dim,), self.init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def context_first_order(view_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) view mask (True = target) → (B, S) view order with the context views first, each group in view order.

    Every sample must have the same number of context views.
    """
    num_context = (~view_mask).sum(dim=1)
    if (num_context != num_context[0]).any():
        raise ValueError(f"every sample needs the same number of context views, got {num_context.tolist()}")
    return torch.argsort(view_mask.int(), dim=1, stable=True)


def select_views(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """x (B, S, ...) and per-sample view indices (B, K) → (B, K, ...)."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], views]


def dense_view_mask(view_mask: torch.Tensor, tokens_per_view: int) -> torch.Tensor:
    """The (B, 1, S·P, S·P) boolean mask of the asymmetric rule (the official formulation; O(L²) memory)."""
    allowed = view_mask[:, :, None] | ~view_mask[:, None, :]  # (B, S_query, S_key)
    allowed = allowed.repeat_interleave(tokens_per_view, 1).repeat_interleave(tokens_per_view, 2)
    return allowed[:, None]


class ContextFirstAttention:
    """Global attention under asymmetric masking: context queries see context keys, target queries see all keys.

    The sequence is ordered with the tokens of all context views first, so the rule is two SDPA calls on
    contiguous slices and no (S·P)×(S·P) mask is built.
    """

    def __init__(self, num_context_tokens: int):
        self.num_context_tokens = num_context_tokens

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B, heads, L, d) → (B, heads, L, d)."""
        n = self.num_context_tokens
        context = F.scaled_dot_product_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n])
        target = F.scaled_dot_product_attention(q[:, :, n:], k, v)
        return torch.cat((context, target), dim=2)


class DenseMaskAttention:
    """SDPA with an explicit boolean mask (reference formulation of the asymmetric rule)."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)


class Attention(nn.Module):
    """Fused-qkv multi-head attention with optional per-head q/k norm and 2-D RoPE, on SDPA."""

    def __init__(self, dim: int, num_heads: int, qk_norm: str = "none", rope_theta: float | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.rope_theta = rope_theta
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = make_qk_norm(qk_norm, self.head_dim)
        self.k_norm = make_qk_norm(qk_norm, self.head_dim)
        self.proj = nn.Linear(dim, dim)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, L, dim) → q, k, v (B, heads, L, head_dim), q and k normalised (before any RoPE)."""
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None, attend=None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.project_qkv(x)
        if self.rope_theta is not None and positions is not None:
            q = apply_rope_2d(q, positions, self.rope_theta)
            k = apply_rope_2d(k, positions, self.rope_theta)
        out = attend(q, k, v) if attend is not None else F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(GradientCheckpointingLayer):
    """Pre-norm transformer block: x += ls1(attn(norm1 x)); x += ls2(mlp(norm2 x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-5,
        layerscale_init: float | None = None,
        qk_norm: str = "none",
        rope_theta: float | None = None,
        attn: nn.Module | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn if attn is not None else Attention(dim, num_heads, qk_norm, rope_theta)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor, positions=None, attend=None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), positions, attend))
        return x + self.ls2(self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------------------------------
# Patch embeddings
# ---------------------------------------------------------------------------------------------------------------------


class ConvPatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) → (N, h·w, C) row-major."""
        return self.proj(images).flatten(2).transpose(1, 2)


class DinoV2PatchEmbed(nn.Module):
    """DINOv2 ViT with registers; returns its final-normed patch tokens (cls and registers dropped)."""

    def __init__(self, config: VGGTConfig):
        super().__init__()
        dim = config.hidden_size
        self.patch_size = config.patch_size
        self.base_grid = config.image_size // config.patch_size
        self.patch_embed = ConvPatchEmbed(config.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.base_grid**2, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)  # unused; kept for checkpoints
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.patch_embed_num_heads,
                config.mlp_ratio,
                norm_eps=1e-6,
                layerscale_init=config.patch_embed_layerscale_init,
            )
            for _ in range(config.patch_embed_num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolate_pos_embed(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> torch.Tensor:
        """Positional embedding for an h×w grid: the 37×37 table resized bicubic with antialias, in float32."""
        if grid_h == grid_w == self.base_grid:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, grid_pos = pos[:, :1], pos[:, 1:]
        dim = grid_pos.shape[-1]
        grid_pos = grid_pos.reshape(1, self.base_grid, self.base_grid, dim).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(grid_h, grid_w), mode="bicubic", antialias=True, align_corners=False)
        grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat((cls_pos, grid_pos), dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images → (N, h·w, C) patch tokens."""
        num, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        tokens = self.patch_embed(images)
        tokens = torch.cat((self.cls_token.expand(num, -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_embed(grid_h, grid_w, tokens.dtype)
        tokens = torch.cat((tokens[:, :1], self.register_tokens.expand(num, -1, -1), tokens[:, 1:]), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + self.register_tokens.shape[1] :]


# ---------------------------------------------------------------------------------------------------------------------
# Aggregator
# ---------------------------------------------------------------------------------------------------------------------


class Aggregator(nn.Module):
    """Alternating frame/global attention over all views; returns per-layer tokens (B, S, P, 2C)."""

    def __init__(self, config: VGGTConfig):
        super().__init__()
        dim = config.hidden_size
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens
        self.patch_start_idx = 1 + config.num_register_tokens
        if config.patch_embed_type == "dinov2":
            self.patch_embed = DinoV2PatchEmbed(config)
        elif config.patch_embed_type == "conv":
            self.patch_embed = ConvPatchEmbed(config.patch_size, dim)
        else:
            raise ValueError(f"unknown patch_embed_type {config.patch_embed_type!r}: expected 'dinov2' or 'conv'")
        # slot 0: first frame of each sequence; slot 1: all other frames
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.num_register_tokens, dim))

        def make_blocks(qk_norm: str) -> nn.ModuleList:
            return nn.ModuleList(
                Block(
                    dim,
                    config.num_attention_heads,
                    config.mlp_ratio,
                    norm_eps=1e-5,
                    layerscale_init=config.layerscale_init,
                    qk_norm=qk_norm,
                    rope_theta=config.rope_theta,
                )
                for _ in range(config.num_hidden_layers)
            )

        self.frame_blocks = make_blocks(config.frame_qk_norm)
        self.global_blocks = make_blocks(config.global_qk_norm)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def _special_tokens(self, param: torch.Tensor, batch: int, num_frames: int) -> torch.Tensor:
        first = param[:, :1].expand(batch, 1, *param.shape[2:])
        others = param[:, 1:].expand(batch, num_frames - 1, *param.shape[2:])
        return torch.cat((first, others), dim=1).flatten(0, 1)  # (B·S, n, C)

    def forward(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor | None = None,
        keep_layers: set[int] | None = None,
        dense_view_mask_attention: bool = False,
    ) -> list[torch.Tensor | None]:
        """images (B, S, 3, H, W) in [0, 1] → list over layers of (B, S, P, 2C) (None for layers not in `keep_layers`).

        `view_mask` (B, S), True = target view, turns on the asymmetric rule in every global attention (computed
        mask-free; `dense_view_mask_attention` uses the official dense (S·P)×(S·P) mask instead, for reference).
        """
        batch, num_frames, _, height, width = images.shape
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        images = ((images - self._mean) / self._std).flatten(0, 1)  # (B·S, 3, H, W)
        patch_tokens = self.patch_embed(images)  # (B·S, h·w, C)
        dim = patch_tokens.shape[-1]
        tokens = torch.cat(
            (
                self._special_tokens(self.camera_token, batch, num_frames).to(patch_tokens.dtype),
                self._special_tokens(self.register_token, batch, num_frames).to(patch_tokens.dtype),
                patch_tokens,
            ),
            dim=1,
        )  # (B·S, P, C)
        tokens_per_frame = tokens.shape[1]
        frame_positions = torch.cat(
            (
                torch.zeros(self.patch_start_idx, 2, dtype=torch.long, device=images.device),
                patch_positions(grid_h, grid_w, images.device) + 1,
            )
        )  # (P, 2): specials at 0, patches shifted by +1
        positions_frame = frame_positions.expand(batch * num_frames, -1, -1)
        positions_global = frame_positions.repeat(num_frames, 1).expand(batch, -1, -1)  # no frame index
        attend = order = None
        if view_mask is not None and dense_view_mask_attention:
            attend = DenseMaskAttention(dense_view_mask(view_mask, tokens_per_frame))
        elif view_mask is not None:
            # frames are independent of their order except through the camera/register slots assigned above, so
            # the frames are reordered context-first for the blocks and restored in the outputs
            order = context_first_order(view_mask)
            tokens = select_views(tokens.view(batch, num_frames, tokens_per_frame, dim), order).flatten(0, 1)
            attend = ContextFirstAttention(int((~view_mask[0]).sum()) * tokens_per_frame)
        restore = torch.argsort(order, dim=1) if order is not None else None

        outputs: list[torch.Tensor | None] = []
        for index, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            tokens = frame_block(tokens.view(batch * num_frames, tokens_per_frame, dim), positions_frame)
            frame_out = tokens.view(batch, num_frames, tokens_per_frame, dim)
            tokens = global_block(tokens.view(batch, num_frames * tokens_per_frame, dim), positions_global, attend)
            global_out = tokens.view(batch, num_frames, tokens_per_frame, dim)
            if keep_layers is None or index in keep_layers:
                layer = torch.cat((frame_out, global_out), dim=-1)
                outputs.append(select_views(layer, restore) if restore is not None else layer)
            else:
                outputs.append(None)
        return outputs


# ---------------------------------------------------------------------------------------------------------------------
# Camera head and pose encoding
# ---------------------------------------------------------------------------------------------------------------------


class CameraHead(nn.Module):
    """Iteratively refined camera pose encoding (absT_quaR_FoV) from the camera tokens of the last layer."""

    def __init__(self, config: VGGTConfig):
        super().__init__()
        dim = config.aggregated_size
        self.num_iterations = config.camera_num_iterations
        self.trunk = nn.Sequential(
            *(
                Block(dim, config.camera_head_num_heads, config.mlp_ratio, layerscale_init=config.layerscale_init)
                for _ in range(config.camera_head_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, 9))
        self.embed_pose = nn.Linear(9, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, 9)

    def forward(self, last_tokens: torch.Tensor) -> list[torch.Tensor]:
        """last_tokens (B, S, P, 2C) → list of `num_iterations` pose encodings (B, S, 9)."""
        camera_tokens = self.token_norm(last_tokens[:, :, 0])  # (B, S, 2C)
        batch, num_frames, _ = camera_tokens.shape
        raw = None
        encodings = []
        for _ in range(self.num_iterations):
            if raw is None:
                pose_input = self.embed_pose(self.empty_pose_tokens.expand(batch, num_frames, -1))
            else:
                pose_input = self.embed_pose(raw.detach())
            shift, scale, gate = self.poseLN_modulation(pose_input).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(camera_tokens) * (1 + scale) + shift) + camera_tokens
            x = self.trunk(x)
            delta = self.pose_branch(self.trunk_norm(x))
            raw = delta if raw is None else raw + delta
            encodings.append(torch.cat((raw[..., :7], F.relu(raw[..., 7:])), dim=-1))
        return encodings


def pose_encoding_to_extrinsics_intrinsics(
    pose_encoding: torch.Tensor, image_size_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, 9) absT_quaR_FoV → extrinsics (…, 3, 4) world→camera and intrinsics (…, 3, 3) in pixels.

    A field of view of 0 (the FoV activation is a ReLU) would give an infinite focal length; it is clamped to a
    tiny positive angle so that downstream rays stay finite.
    """
    height, width = image_size_hw
    translation, quat, fov = pose_encoding[..., :3], pose_encoding[..., 3:7], pose_encoding[..., 7:9]
    i, j, k, r = quat.unbind(-1)
    s = 2.0 / (quat * quat).sum(-1)
    rotation = torch.stack(
        (
            1 - s * (j * j + k * k), s * (i * j - k * r), s * (i * k + j * r),
            s * (i * j + k * r), 1 - s * (i * i + k * k), s * (j * k - i * r),
            s * (i * k - j * r), s * (j * k + i * r), 1 - s * (i * i + j * j),
        ),
        dim=-1,
    ).view(*quat.shape[:-1], 3, 3)  # fmt: skip
    extrinsics = torch.cat((rotation, translation[..., None]), dim=-1)
    fov = fov.float().clamp_min(1e-6)
    focal_y = (height / 2.0) / torch.tan(fov[..., 0] / 2.0)
    focal_x = (width / 2.0) / torch.tan(fov[..., 1] / 2.0)
    intrinsics = torch.zeros(*pose_encoding.shape[:-1], 3, 3, device=pose_encoding.device)
    intrinsics[..., 0, 0] = focal_x
    intrinsics[..., 1, 1] = focal_y
    intrinsics[..., 0, 2] = width / 2.0
    intrinsics[..., 1, 2] = height / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


# ---------------------------------------------------------------------------------------------------------------------
# DPT head
# ---------------------------------------------------------------------------------------------------------------------


def _sincos_embed(positions: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """positions (M,) → (M, dim): [sin(p·ω_j)] ++ [cos(p·ω_j)], ω_j = ω_0^(−j/(dim/2)), computed in float64."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    angles = positions.double()[:, None] * (1.0 / omega_0**omega)[None]
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def uv_position_embedding(grid_h: int, grid_w: int, channels: int, aspect_ratio: float, device) -> torch.Tensor:
    """Aspect-aware normalised (u, v) grid embedded with sin/cos → (channels, grid_h, grid_w)."""
    diagonal = math.sqrt(aspect_ratio**2 + 1)
    span_x, span_y = aspect_ratio / diagonal, 1.0 / diagonal
    u = torch.linspace(-span_x * (grid_w - 1) / grid_w, span_x * (grid_w - 1) / grid_w, grid_w, device=device)
    v = torch.linspace(-span_y * (grid_h - 1) / grid_h, span_y * (grid_h - 1) / grid_h, grid_h, device=device)
    uu, vv = torch.meshgrid(u, v, indexing="xy")  # (grid_h, grid_w)
    embed = torch.cat((_sincos_embed(uu.reshape(-1), channels // 2), _sincos_embed(vv.reshape(-1), channels // 2)), 1)
    return embed.view(grid_h, grid_w, channels).permute(2, 0, 1)


def _neighbourhood_upsampling(size_in: int, size_out: int, grid: int, stride: int, like: torch.Tensor):
    """Bilinear (align_corners) resizing size_in → size_out evaluated only at the outputs stride·i − 1, stride·i,
    stride·i + 1 (i < grid) → weights (3·grid, size_in) and those output indices (3·grid,); rows outside the output
    are zero."""
    outputs = (torch.arange(grid, device=like.device)[:, None] * stride + torch.arange(-1, 2, device=like.device)).flatten()
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    source = outputs.clamp(0, size_out - 1).to(torch.float32) * scale
    low = source.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    frac = (source - low.to(torch.float32)).to(like.dtype)
    weights = torch.zeros(len(outputs), size_in, dtype=like.dtype, device=like.device)
    rows = torch.arange(len(outputs), device=like.device)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    weights[(outputs < 0) | (outputs >= size_out)] = 0
    return weights, outputs


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)  # the skip carries relu(x), as the reference's in-place ReLU does
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTScratch(nn.Module):
    def __init__(self, in_channels: list[int], features: int, output_dim: int):
        super().__init__()
        for index, channels in enumerate(in_channels, start=1):
            setattr(self, f"layer{index}_rn", nn.Conv2d(channels, features, 3, padding=1, bias=False))
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
        )


class DPTHead(nn.Module):
    """Dense prediction head over four aggregator layers; returns (prediction, confidence) at full resolution."""

    def __init__(self, config: VGGTConfig, output_dim: int, activation: str):
        super().__init__()
        dim = config.aggregated_size
        channels = config.dpt_out_channels
        self.patch_size = config.patch_size
        self.layers = config.dpt_intermediate_layers
        self.frames_chunk_size = config.dpt_frames_chunk_size
        self.activation = activation
        self.norm = nn.LayerNorm(dim)
        self.projects = nn.ModuleList(nn.Conv2d(dim, c, 1) for c in channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[0], channels[0], 4, stride=4),
                nn.ConvTranspose2d(channels[1], channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = DPTScratch(channels, config.dpt_features, output_dim)

    @staticmethod
    def _add_uv(x: torch.Tensor, aspect_ratio: float, ratio: float = 0.1) -> torch.Tensor:
        embed = uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], aspect_ratio, x.device)
        return x + ratio * embed.to(x.dtype)[None]

    def _fused_features(self, tokens: list[torch.Tensor], patch_start_idx: int, height: int, width: int) -> torch.Tensor:
        """Aggregator layers (B, S, P, 2C) → fused features before the last upsampling (B·S, F/2, 8h, 8w)."""
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        aspect_ratio = width / height
        features = []
        for index, layer in enumerate(self.layers):
            x = tokens[layer][:, :, patch_start_idx:].flatten(0, 1)  # (B·S, h·w, 2C)
            x = self.norm(x).transpose(1, 2).reshape(x.shape[0], -1, grid_h, grid_w)
            x = self._add_uv(self.projects[index](x), aspect_ratio)
            features.append(self.resize_layers[index](x))
        scratch = self.scratch
        l1, l2, l3, l4 = (getattr(scratch, f"layer{i}_rn")(f) for i, f in enumerate(features, start=1))
        x = scratch.refinenet4(l4, size=l3.shape[2:])
        x = scratch.refinenet3(x, l3, size=l2.shape[2:])
        x = scratch.refinenet2(x, l2, size=l1.shape[2:])
        x = scratch.refinenet1(x, l1)
        return scratch.output_conv1(x)

    def _activate(self, x: torch.Tensor, batch: int, num_frames: int):
        """Head output (B·S, out, H', W') → values (B, S, H', W', out−1), confidence (B, S, H', W')."""
        x = x.permute(0, 2, 3, 1)
        values, confidence = x[..., :-1], x[..., -1]
        if self.activation == "exp":
            values = values.exp()
        elif self.activation == "inv_log":
            values = values.sign() * torch.expm1(values.abs())
        else:
            raise ValueError(f"unknown DPT activation {self.activation!r}")
        confidence = 1 + confidence.exp()
        return values.view(batch, num_frames, *values.shape[1:]), confidence.view(batch, num_frames, *confidence.shape[1:])

    def _forward_frames(self, tokens: list[torch.Tensor], patch_start_idx: int, height: int, width: int):
        batch, num_frames = tokens[self.layers[0]].shape[:2]
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        x = self._fused_features(tokens, patch_start_idx, height, width)
        x = F.interpolate(x, size=(grid_h * self.patch_size, grid_w * self.patch_size), mode="bilinear", align_corners=True)
        x = self.scratch.output_conv2(self._add_uv(x, width / height))  # (B·S, out, H, W)
        return self._activate(x, batch, num_frames)

    def _forward_frames_at_stride(self, tokens: list[torch.Tensor], patch_start_idx: int, height: int, width: int):
        """`_forward_frames` at the pixels (p·i, p·j) only: the last upsampling and 3×3 conv evaluated on their
        3×3 neighbourhoods (zero outside the image, as the conv's padding), so no full-resolution map is built."""
        batch, num_frames = tokens[self.layers[0]].shape[:2]
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        full_h, full_w = grid_h * self.patch_size, grid_w * self.patch_size
        x = self._fused_features(tokens, patch_start_idx, height, width)  # (N, c, h', w')
        rows_weight, rows = _neighbourhood_upsampling(x.shape[-2], full_h, grid_h, self.patch_size, x)
        cols_weight, cols = _neighbourhood_upsampling(x.shape[-1], full_w, grid_w, self.patch_size, x)
        x = torch.einsum("yh,nchw,xw->ncyx", rows_weight, x, cols_weight)  # (N, c, 3h, 3w) bilinear, align_corners
        embed = uv_position_embedding(full_h, full_w, x.shape[1], width / height, x.device)
        embed = embed[:, rows.clamp(0, full_h - 1)][:, :, cols.clamp(0, full_w - 1)]
        inside = ((rows >= 0) & (rows < full_h))[:, None] & ((cols >= 0) & (cols < full_w))[None]
        x = (x + 0.1 * embed.to(x.dtype)[None]) * inside.to(x.dtype)
        conv3, relu, conv1 = self.scratch.output_conv2
        x = conv1(relu(F.conv2d(x, conv3.weight, conv3.bias, stride=3)))  # (N, out, h, w)
        return self._activate(x, batch, num_frames)

    def at_patch_stride(self, tokens: list[torch.Tensor], patch_start_idx: int, image_size_hw: tuple[int, int]):
        """`forward(...)` sampled at every `patch_size`-th pixel — values (B, S, h, w, out−1), confidence (B, S, h, w) —
        equal to `forward(...)[0][:, :, ::p, ::p]` (which is nearest resizing to the patch grid) within float
        tolerance, at a fraction of the cost and memory."""
        return self._chunked(self._forward_frames_at_stride, tokens, patch_start_idx, image_size_hw)

    def _chunked(self, fn, tokens, patch_start_idx, image_size_hw):
        num_frames = tokens[self.layers[0]].shape[1]
        chunk = self.frames_chunk_size or num_frames
        results = [
            fn([t[:, start : start + chunk] if t is not None else None for t in tokens], patch_start_idx, *image_size_hw)
            for start in range(0, num_frames, chunk)
        ]
        return torch.cat([r[0] for r in results], dim=1), torch.cat([r[1] for r in results], dim=1)

    def forward(self, tokens: list[torch.Tensor], patch_start_idx: int, image_size_hw: tuple[int, int]):
        """tokens: aggregator layers (B, S, P, 2C) → values (B, S, H, W, out−1), confidence (B, S, H, W)."""
        return self._chunked(self._forward_frames, tokens, patch_start_idx, image_size_hw)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class VGGTOutput(ModelOutput):
    """
    Args:
        pose_encodings: camera-head encodings per refinement iteration, each (B, S, 9) absT_quaR_FoV.
        extrinsics: (B, S, 3, 4) world→camera [R|t] (OpenCV; the first frame is the world frame).
        intrinsics: (B, S, 3, 3) in pixels.
        depth: (B, S, H, W, 1) metric-up-to-scale depth; depth_conf (B, S, H, W).
        world_points: (B, S, H, W, 3) point map; world_points_conf (B, S, H, W).
        aggregated_tokens: per-layer aggregator tokens (B, S, P, 2C) when requested.
    """

    pose_encodings: tuple[torch.Tensor, ...] | None = None
    extrinsics: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    depth_conf: torch.Tensor | None = None
    world_points: torch.Tensor | None = None
    world_points_conf: torch.Tensor | None = None
    aggregated_tokens: tuple[torch.Tensor, ...] | None = None


def init_vggt_module(module: nn.Module, std: float) -> None:
    """Initialise one module of the VGGT family (used by `_init_weights` of VGGT and Spa3R models)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.RMSNorm):
        nn.init.ones_(module.weight)
    elif isinstance(module, LayerScale):
        nn.init.constant_(module.gamma, module.init_value)
    elif isinstance(module, Aggregator):
        nn.init.normal_(module.camera_token, std=1e-6)
        nn.init.normal_(module.register_token, std=1e-6)
        # non-persistent buffers are not in checkpoints: from_pretrained (meta device) must fill them here
        with torch.no_grad():
            module._mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1))
            module._std.copy_(torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1))
    elif isinstance(module, DinoV2PatchEmbed):
        nn.init.trunc_normal_(module.pos_embed, std=0.02)
        nn.init.normal_(module.cls_token, std=1e-6)
        nn.init.normal_(module.register_tokens, std=1e-6)
        nn.init.zeros_(module.mask_token)
    elif isinstance(module, CameraHead):
        nn.init.zeros_(module.empty_pose_tokens)


class VGGTPreTrainedModel(PreTrainedModel):
    config_class = VGGTConfig
    base_model_prefix = "vggt"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """SDPA only; flash_attention_* requests are served by SDPA, others refused (see `attention.py`)."""
        from .attention import resolve_sdpa_only_attention

        return resolve_sdpa_only_attention(self, requested_attention)

    def _init_weights(self, module):
        init_vggt_module(module, self.config.initializer_range)


def run_camera_head(camera_head: CameraHead, last_tokens: torch.Tensor, image_size_hw) -> tuple[list, torch.Tensor, torch.Tensor]:
    """Camera head in float32 whatever the autocast dtype → (encodings, extrinsics, intrinsics)."""
    with torch.autocast(device_type=last_tokens.device.type, enabled=False):
        encodings = camera_head(last_tokens.float())
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(encodings[-1], image_size_hw)
    return encodings, extrinsics, intrinsics


def run_dpt_head(head: DPTHead, tokens: list, patch_start_idx: int, image_size_hw, at_patch_stride: bool = False):
    """DPT head in float32 whatever the autocast dtype; `at_patch_stride`: only every patch_size-th pixel."""
    tokens = [t.float() if t is not None else None for t in tokens]
    with torch.autocast(device_type=head.norm.weight.device.type, enabled=False):
        if at_patch_stride:
            return head.at_patch_stride(tokens, patch_start_idx, image_size_hw)
        return head(tokens, patch_start_idx, image_size_hw)


class VGGTModel(VGGTPreTrainedModel):
    """VGGT: multi-view images → cameras, depth and point maps. The heads always run in float32."""

    def __init__(self, config: VGGTConfig):
        super().__init__(config)
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(config)
        self.depth_head = DPTHead(config, output_dim=2, activation="exp") if config.use_depth_head else None
        self.point_head = DPTHead(config, output_dim=4, activation="inv_log") if config.use_point_head else None
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        view_mask: torch.Tensor | None = None,
        output_aggregated_tokens: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> VGGTOutput:
        """pixel_values (B, S, 3, H, W) in [0, 1] (a single scene (S, 3, H, W) is accepted too)."""
        if pixel_values.ndim == 4:
            pixel_values = pixel_values[None]
        validate_pixel_values(pixel_values, self.config.patch_size)
        if view_mask is not None:
            check_view_mask(view_mask, *pixel_values.shape[:2], require_target=False)
        image_size_hw = tuple(pixel_values.shape[-2:])
        tokens = self.aggregator(pixel_values, view_mask=view_mask)
        start = self.aggregator.patch_start_idx
        encodings, extrinsics, intrinsics = run_camera_head(self.camera_head, tokens[-1], image_size_hw)
        depth = depth_conf = points = points_conf = None
        if self.depth_head is not None:
            depth, depth_conf = run_dpt_head(self.depth_head, tokens, start, image_size_hw)
        if self.point_head is not None:
            points, points_conf = run_dpt_head(self.point_head, tokens, start, image_size_hw)
        return VGGTOutput(
            pose_encodings=tuple(encodings),
            extrinsics=extrinsics,
            intrinsics=intrinsics,
            depth=depth,
            depth_conf=depth_conf,
            world_points=points,
            world_points_conf=points_conf,
            aggregated_tokens=tuple(tokens) if output_aggregated_tokens else None,
        )


__all__ = ["VGGTModel", "VGGTPreTrainedModel", "VGGTOutput", "pose_encoding_to_extrinsics_intrinsics"]
