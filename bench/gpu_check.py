"""GPU check: mask-free asymmetric attention vs the dense-mask formulation at VGGT-1B size, and Spa3-VLM's geometry
branch share of prefill. One short script for a lent device (a few minutes on one GPU).

1. Spa3RForPretraining with a VGGT-1B-size aggregator (random weights; 1024 wide, 24+24 blocks, DINOv2-L patch
   embedding) and the released Spa3R size, views 518x392, bf16 autocast (VGGT heads float32 as always): one
   asymmetric training step (forward + backward) with our two-call SDPA (no mask, so flash attention applies) and
   with the official dense (V·P)×(V·P) boolean mask, at V = 8, 16, 32: median time and peak allocated memory,
   ratios; then V grows until each formulation runs out of memory (the largest V that fits).
2. Spa3-VLM at Qwen2.5-VL-7B size (random weights) with 16 images + their Spa3R scene: time of the whole prefill
   forward and of the geometry branch inside it (Spa3R encode + gated cross-attention fusion).

    python bench/gpu_check.py                 # on a GPU
    python bench/gpu_check.py --tiny          # tiny sizes on CPU (what the test runs)
"""

import argparse
import contextlib
import functools
import json
import statistics
import time

import torch

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining
from modeling_spa3r.configuration_spa3r import VGGTConfig
from modeling_spa3r.modeling_spa3r import sample_view_mask
from modeling_spa3r.modeling_vggt import Aggregator


def step_config(tiny: bool) -> Spa3RConfig:
    if not tiny:
        return Spa3RConfig(vggt_config=VGGTConfig(use_point_head=False).to_dict())  # released sizes, VGGT-1B backbone
    vggt = VGGTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_embed_type="conv",
                      camera_head_depth=1, camera_head_num_heads=2, dpt_features=16, dpt_out_channels=[8, 16, 32, 32],
                      dpt_intermediate_layers=[0, 0, 1, 1], use_point_head=False)  # fmt: skip
    teacher = dict(model_type="dinov3_vit", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, patch_size=16, num_register_tokens=4)  # fmt: skip
    return Spa3RConfig(vggt_config=vggt.to_dict(), semantic_teacher_config=teacher, hidden_size=32, num_attention_heads=4,
                       num_queries=8, num_encoder_layers=1, num_decoder_layers=1, semantic_size=32, semantic_image_size=64)  # fmt: skip


class Device:
    """Synchronised timing and peak memory on CUDA; wall time only on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def measure(self, fn, repeats: int) -> tuple[float, float, object]:
        """Median seconds over `repeats` runs after a warm-up, peak allocated GiB (nan on CPU), the last result."""
        fn()
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            self.sync()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else float("nan")
        return statistics.median(times), peak, result

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def free(self):
        if self.cuda:
            torch.cuda.empty_cache()


def is_oom(error: Exception) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def asymmetric_step(model, images, view_mask, device: Device, dense: bool):
    aggregator = model.spa3r.aggregator
    if dense:
        aggregator.forward = functools.partial(Aggregator.forward, aggregator, dense_view_mask_attention=True)
    try:
        model.zero_grad(set_to_none=True)
        with device.autocast():
            loss = model(images, view_mask=view_mask, asymmetric_masking=True).loss
        loss.backward()
        return loss.detach().float()
    finally:
        if dense:
            del aggregator.forward


def attention_check(args, device: Device) -> dict:
    torch.manual_seed(0)
    model = Spa3RForPretraining(step_config(args.tiny)).to(device.device).train()
    height, width = args.size
    results = {"cases": [], "largest_views": {}}
    print(f"1. asymmetric step, bf16 autocast, {height}x{width} views "
          f"(aggregator {model.config.vggt_config.hidden_size} wide x {model.config.vggt_config.num_hidden_layers})")
    print(f"{'V':>4} {'ours (s)':>9} {'dense (s)':>10} {'speed-up':>9} {'ours GiB':>9} {'dense GiB':>10} {'mem ratio':>10} {'|dloss|':>8}")

    def run(num_views: int, dense: bool):
        images = torch.rand(1, num_views, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device.device)
        view_mask = sample_view_mask(1, num_views, 0.5, generator=torch.Generator().manual_seed(2)).to(device.device)
        return device.measure(functools.partial(asymmetric_step, model, images, view_mask, device, dense), args.repeats)

    largest, out_of_memory = {False: 0, True: 0}, {False: False, True: False}
    for num_views in sorted(set(args.views) | set(args.grow_views)):
        row = {"views": num_views}
        for dense in (False, True):
            if out_of_memory[dense]:
                continue  # it already ran out of memory at a smaller V
            try:
                row[dense] = run(num_views, dense)
                largest[dense] = num_views
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_oom(error):
                    raise
                row[dense], out_of_memory[dense] = None, True
            finally:
                device.free()
        ours, dense = row.get(False), row.get(True)
        if num_views in args.views and ours and dense:
            case = {"views": num_views, "ours_s": ours[0], "dense_s": dense[0], "ours_gib": ours[1], "dense_gib": dense[1],
                    "speedup": dense[0] / ours[0], "memory_ratio": ours[1] / dense[1], "loss_diff": (ours[2] - dense[2]).abs().item()}  # fmt: skip
            results["cases"].append(case)
            print(f"{num_views:>4} {ours[0]:>9.3f} {dense[0]:>10.3f} {case['speedup']:>8.2f}x {ours[1]:>9.2f} {dense[1]:>10.2f} "
                  f"{case['memory_ratio']:>10.2f} {case['loss_diff']:>8.1e}")
        else:
            text = {key: ("OOM" if value is None else f"{value[0]:.3f}s {value[1]:.1f}GiB") for key, value in row.items() if key != "views"}
            print(f"{num_views:>4} ours {text.get(False, '-')}  dense {text.get(True, '-')}")
    for dense in (False, True):  # ">=" when even the largest V tried fitted
        results["largest_views"]["dense" if dense else "ours"] = f"{'' if out_of_memory[dense] else '>='}{largest[dense]}"
    print(f"largest V that fits (tried {sorted(set(args.views) | set(args.grow_views))}): {results['largest_views']}")
    del model
    device.free()
    return results


def vlm_config(tiny: bool):
    from transformers import Qwen2_5_VLConfig

    from modeling_spa3r.configuration_spa3_vlm import Spa3VLMConfig
    from modeling_spa3r.small_models import build_tokenizer, small_qwen_config

    if tiny:
        qwen = small_qwen_config(build_tokenizer(), hidden_size=32, num_heads=4, vision_hidden_size=16, window_size=56)
        return Spa3VLMConfig.from_qwen_config(qwen, geometry_config=step_config(True))
    qwen = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
    )  # fmt: skip  (Qwen2.5-VL-7B-Instruct sizes)
    return Spa3VLMConfig.from_qwen_config(qwen, geometry_config=Spa3RConfig(vggt_config=VGGTConfig(use_point_head=False).to_dict()))


def prefill_check(args, device: Device) -> dict:
    from modeling_spa3r.modeling_spa3_vlm import Spa3VLMModel

    config = vlm_config(args.tiny)
    torch.manual_seed(0)
    with torch.device(device.device):
        model = Spa3VLMModel(config).to(torch.bfloat16).eval()
    frames, (height, width) = args.frames, args.size
    merge, patch = config.vision_config.spatial_merge_size, config.vision_config.patch_size
    grid_h, grid_w = height // patch // merge * merge, width // patch // merge * merge  # Qwen's grid of each image
    tokens_per_image = grid_h * grid_w // merge**2
    patch_dim = config.vision_config.in_channels * config.vision_config.temporal_patch_size * patch**2
    text = torch.full((8,), 0, dtype=torch.long)
    image = torch.tensor([config.vision_start_token_id, *[config.image_token_id] * tokens_per_image, config.vision_end_token_id])
    input_ids = torch.cat([text, *[image] * frames, text])[None].to(device.device)
    inputs = dict(
        input_ids=input_ids,
        pixel_values=torch.randn(frames * grid_h * grid_w, patch_dim, device=device.device, dtype=torch.bfloat16),
        image_grid_thw=torch.tensor([[1, grid_h, grid_w]] * frames, device=device.device),
        geometry_pixel_values=torch.rand(1, frames, 3, height, width, device=device.device),
    )
    geometry_times = []
    fuse = model.fuse_geometry

    def timed_fuse(*fuse_args, **fuse_kwargs):
        device.sync()
        start = time.perf_counter()
        out = fuse(*fuse_args, **fuse_kwargs)
        device.sync()
        geometry_times.append(time.perf_counter() - start)
        return out

    model.fuse_geometry = timed_fuse
    with torch.no_grad(), device.autocast():
        seconds, peak, _ = device.measure(lambda: model(**inputs, use_cache=False), args.repeats)
    geometry = statistics.median(geometry_times[1:] or geometry_times)
    share = geometry / seconds
    print(f"2. Spa3-VLM prefill, {frames} images ({tokens_per_image} tokens each, {input_ids.shape[1]} in all), "
          f"geometry {frames}x{height}x{width}: prefill {seconds:.3f} s, geometry branch {geometry:.3f} s "
          f"= {100 * share:.1f} % of prefill, peak {peak:.1f} GiB")
    del model
    device.free()
    return {"prefill_s": seconds, "geometry_s": geometry, "geometry_share": share, "peak_gib": peak, "sequence": input_ids.shape[1]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models at 28x42 on CPU (a smoke run)")
    parser.add_argument("--views", type=int, nargs="+", default=None, help="compared view counts (default 8 16 32)")
    parser.add_argument("--grow_views", type=int, nargs="*", default=None, help="further V tried to find the limit")
    parser.add_argument("--frames", type=int, default=None, help="Spa3-VLM images (default 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_vlm", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    args.size = (28, 42) if args.tiny else (392, 518)
    args.views = args.views or ([2, 4] if args.tiny else [8, 16, 32])
    args.grow_views = args.grow_views if args.grow_views is not None else ([] if args.tiny else [48, 64, 96, 128])
    args.frames = args.frames or (4 if args.tiny else 16)
    device = Device(torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda"))
    name = torch.cuda.get_device_name(device.device) if device.cuda else "CPU"
    print(f"torch {torch.__version__}, device {name}")
    results = {"device": name, "attention": attention_check(args, device)}
    if not args.skip_vlm:
        results["prefill"] = prefill_check(args, device)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=str)
    return results


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
