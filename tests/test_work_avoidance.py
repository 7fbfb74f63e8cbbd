"""Exact work avoidance (issue 15): each shortcut equals the formulation it replaces within float tolerance."""

import pytest
import torch
import torch.nn.functional as F

from modeling_spa3r import Spa3RForPretraining
from modeling_spa3r.modeling_spa3r import PRoPE
from modeling_spa3r.modeling_vggt import DPTHead, init_vggt_module

from .fixtures_spa3r import tiny_spa3r_config, tiny_vggt_config

VIEW_MASK = torch.tensor([[False, True, False, True], [False, False, True, True]])


def _dpt_head(chunk: int) -> DPTHead:
    torch.manual_seed(0)
    config = tiny_vggt_config(num_hidden_layers=4, dpt_intermediate_layers=[0, 1, 2, 3], dpt_frames_chunk_size=chunk)
    head = DPTHead(config, output_dim=2, activation="exp")
    for module in head.modules():
        init_vggt_module(module, 0.05)
    return head.eval()


@pytest.mark.parametrize("height,width,chunk", [(28, 42, 2), (56, 28, 0), (14, 14, 8), (42, 70, 1)])
def test_depth_head_at_patch_stride_equals_full_map_sampled(height, width, chunk):
    head = _dpt_head(chunk)
    grid = (height // 14, width // 14)
    tokens = [torch.randn(2, 3, 5 + grid[0] * grid[1], 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.no_grad():
        depth, confidence = head(tokens, 5, (height, width))  # (B, S, H, W, 1), (B, S, H, W)
        sampled, sampled_confidence = head.at_patch_stride(tokens, 5, (height, width))
    assert sampled.shape == (2, 3, *grid, 1) and sampled_confidence.shape == (2, 3, *grid)
    torch.testing.assert_close(sampled, depth[:, :, ::14, ::14], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sampled_confidence, confidence[:, :, ::14, ::14], atol=1e-6, rtol=1e-5)
    nearest = F.interpolate(depth.flatten(0, 1).permute(0, 3, 1, 2), grid, mode="nearest")  # what the target was
    torch.testing.assert_close(sampled.flatten(0, 1).permute(0, 3, 1, 2), nearest, atol=1e-6, rtol=1e-5)
    assert depth.std() > 0  # a constant map would hide indexing mistakes


@pytest.mark.parametrize("asymmetric", [True, False])
def test_sampled_depth_target_gives_the_same_targets_and_loss(asymmetric):
    images = torch.rand(2, 4, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    full = Spa3RForPretraining(tiny_spa3r_config()).eval()
    sampled = Spa3RForPretraining(tiny_spa3r_config(sampled_depth_target=True)).eval()
    sampled.load_state_dict(full.state_dict())
    with torch.no_grad():
        reference = full(images, view_mask=VIEW_MASK, asymmetric_masking=asymmetric)
        ours = sampled(images, view_mask=VIEW_MASK, asymmetric_masking=asymmetric)
    assert ours.target_depth.shape == (2, 4, 6, 1)
    torch.testing.assert_close(ours.target_depth, reference.target_depth, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.loss, reference.loss, atol=1e-6, rtol=1e-5)


def _cameras(num: int, cameras: int):
    generator = torch.Generator().manual_seed(3)
    rotation = torch.linalg.qr(torch.randn(num, cameras, 3, 3, generator=generator))[0]
    viewmats = torch.eye(4).repeat(num, cameras, 1, 1)
    viewmats[..., :3, :3] = rotation
    viewmats[..., :3, 3] = torch.randn(num, cameras, 3, generator=generator)
    intrinsics = torch.tensor([[40.0, 0, 21], [0, 38.0, 14], [0, 0, 1]]).repeat(num, cameras, 1, 1)
    return viewmats, intrinsics


def test_prope_trailing_spatial_tokens_use_slices_and_match_the_index_path():
    viewmats, intrinsics = _cameras(3, 1)
    mask = torch.zeros(7 + 6, dtype=torch.bool)
    mask[7:] = True  # registers + queries first, then the 2×3 ray tokens (the decoder's layout)
    q, k, v = (torch.randn(3, 2, 13, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    sliced = PRoPE(viewmats, intrinsics, (28, 42), (2, 3), mask)
    assert sliced.spatial_start == 7
    indexed = PRoPE(viewmats, intrinsics, (28, 42), (2, 3), mask)
    indexed.spatial_start = None  # the general index_copy formulation
    for ours, reference in zip(sliced.transform_qkv(q, k, v), indexed.transform_qkv(q, k, v)):
        torch.testing.assert_close(ours, reference, atol=0, rtol=0)
    torch.testing.assert_close(sliced(q, k, v), indexed(q, k, v), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sliced(q, k, v)[:, :, :7], F.scaled_dot_product_attention(*indexed.transform_qkv(q, k, v))[:, :, :7])
    scattered = mask.clone()
    scattered[[7, 8]] = False
    scattered[[0, 1]] = True
    assert PRoPE(viewmats, intrinsics, (28, 42), (2, 3), scattered).spatial_start is None  # not one trailing run


def test_decoder_shares_latent_row_projections_across_views():
    torch.manual_seed(0)
    model = Spa3RForPretraining(tiny_spa3r_config(num_decoder_layers=2)).train()
    batch, views, queries, rays, dim = 2, 3, 8, 6, 32
    latents = torch.randn(batch, queries, dim, requires_grad=True)
    sequence = torch.cat((latents.repeat_interleave(views, 0), torch.randn(batch * views, rays, dim)), dim=1)
    viewmats, intrinsics = _cameras(batch * views, 1)
    mask = torch.zeros(4 + queries + rays, dtype=torch.bool)
    mask[4 + queries :] = True
    prope = PRoPE(viewmats, intrinsics, (28, 42), (2, 3), mask)
    reference, reference_hidden = model.decoder(sequence, attend=prope, output_hidden_states=True)
    (reference_grad,) = torch.autograd.grad(reference.square().sum(), latents)
    ours, ours_hidden = model.decoder(sequence, attend=prope, output_hidden_states=True, shared_rows=queries, copies=views)
    (ours_grad,) = torch.autograd.grad(ours.square().sum(), latents)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(ours_hidden, reference_hidden):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_grad, reference_grad, atol=1e-5, rtol=1e-4)
    calls = []
    handle = model.decoder.blocks[0].attn.qkv.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    model.decoder(sequence, attend=prope, shared_rows=queries, copies=views)
    handle.remove()
    assert calls == [(batch, 4 + queries, dim), (batch * views, rays, dim)]  # latent rows projected once per sample
