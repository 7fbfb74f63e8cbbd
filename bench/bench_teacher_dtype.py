"""Frozen teachers in bf16 (`teacher_dtype="bfloat16"`) vs float32 over a short training run on synthetic scenes.

The synthetic preset's model (configuration/models/spa3r-synthetic-tiny.json) and data shapes (4 views at 112 px,
8 images per batch), but with the frozen teachers on — random-weight aggregator, camera and depth heads and a
small DINOv3, seeded — since that is where `teacher_dtype` acts (the preset itself trains its backbone on rendered
targets). Both runs start from the same weights and see the same batches and view masks; AdamW as in the preset.
Also prints how far bf16 moves each teacher target on the first batch, and what running the VGGT heads
themselves in bf16 (dropping their float32 rule) would add.

    python bench/bench_teacher_dtype.py [--steps 50] [--scenes 4] [--threads 2]
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining
from modeling_spa3r.data.datasets import MultiViewDataset, collate_views
from modeling_spa3r.data.synthetic import SynthConfig, generate_dataset
from modeling_spa3r.modeling_spa3r import sample_view_mask
from modeling_spa3r.modeling_vggt import pose_encoding_to_extrinsics_intrinsics

PRESET_MODEL = Path(__file__).resolve().parents[1] / "configuration" / "models" / "spa3r-synthetic-tiny.json"


def teacher_config(teacher_dtype: str) -> Spa3RConfig:
    config = Spa3RConfig.from_json_file(PRESET_MODEL)
    config.train_backbone, config.geometry_target_size, config.teacher_dtype = False, None, teacher_dtype
    semantic = dict(model_type="dinov3_vit", hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, patch_size=16, num_register_tokens=4)  # fmt: skip
    return Spa3RConfig(**{**config.to_dict(), "semantic_teacher_config": semantic, "semantic_size": 64, "semantic_image_size": 112})


def batches(root: Path, steps: int, batch: int, views: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dataset = MultiViewDataset(root, views=(views, views), stride="synthetic", width=112, samples_per_scene=64)
    generator = torch.Generator().manual_seed(0)
    out = []
    for step in range(steps):
        samples = [dataset[(step * batch + i) % len(dataset)] for i in range(batch)]
        out.append((collate_views(samples)["pixel_values"], sample_view_mask(batch, views, 0.5, generator=generator)))
    return out


def train(model, data, lr: float) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    losses = []
    for images, view_mask in tqdm(data, desc=model.config.teacher_dtype, leave=False):
        optimizer.zero_grad(set_to_none=True)
        loss = model(images, view_mask=view_mask).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def head_precision(model, images, view_mask) -> dict[str, float]:
    """Relative error of the teacher targets with bf16 teachers (heads float32) and with the heads in bf16 too."""
    with torch.no_grad():
        fp32 = model(images, view_mask=view_mask)
        model.config.teacher_dtype = "bfloat16"
        bf16 = model(images, view_mask=view_mask)
        tokens = model.spa3r.aggregate(images, view_mask=view_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the heads without their float32 rule
            encoding = model.camera_head(tokens[-1])[-1]
            depth = model.depth_head(tokens, model.spa3r.aggregator.patch_start_idx, tuple(images.shape[-2:]))[0]
        model.config.teacher_dtype = "float32"
    extrinsics, _ = pose_encoding_to_extrinsics_intrinsics(encoding.float(), tuple(images.shape[-2:]))
    depth = depth.float()[:, :, ::14, ::14].flatten(2, 3)
    return {
        "geometry target (aggregator)": relative(bf16.target_geo, fp32.target_geo),
        "semantic target (DINOv3)": relative(bf16.target_sem, fp32.target_sem),
        "depth target, heads fp32": relative(bf16.target_depth, fp32.target_depth),
        "depth target, heads bf16": relative(depth, fp32.target_depth),
        "extrinsics, heads fp32": relative(bf16.extrinsics, fp32.extrinsics),
        "extrinsics, heads bf16": relative(extrinsics, fp32.extrinsics),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(tmp, args.scenes, config=SynthConfig(width=160, height=120, frames=args.frames), progress=False)
        data = batches(Path(tmp), args.steps, batch=2, views=4)
    torch.manual_seed(0)
    reference = Spa3RForPretraining(teacher_config("float32")).train()
    errors = head_precision(reference, *data[0])
    candidate = Spa3RForPretraining(teacher_config("bfloat16")).train()
    candidate.load_state_dict(copy.deepcopy(reference.state_dict()))
    timings = {}
    runs = {}
    for name, model in (("float32", reference), ("bfloat16", candidate)):
        start = time.perf_counter()
        runs[name] = train(model, data, args.lr)
        timings[name] = time.perf_counter() - start
    fp32, bf16 = torch.tensor(runs["float32"]), torch.tensor(runs["bfloat16"])
    deviation = (bf16 - fp32).abs() / fp32.abs()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps, B=2 V=4 112 px synthetic scenes")
    print(f"{'step':>5} {'loss fp32':>10} {'loss bf16':>10} {'rel. dev.':>10}")
    for step in sorted({0, *range(9, args.steps, 10), args.steps - 1}):
        print(f"{step + 1:>5} {fp32[step]:>10.4f} {bf16[step]:>10.4f} {deviation[step]:>10.2e}")
    print(f"relative loss deviation over {args.steps} steps: mean {deviation.mean():.2e}, max {deviation.max():.2e}; "
          f"mean loss last 10 steps fp32 {fp32[-10:].mean():.4f} bf16 {bf16[-10:].mean():.4f}")
    print(f"wall time fp32 {timings['float32']:.1f} s, bf16 teachers {timings['bfloat16']:.1f} s (tiny model: not a speed bench)")
    print("relative error of the first batch's targets with bf16 teachers:")
    for name, value in errors.items():
        print(f"  {name:<30} {value:.2e}")
    return {"deviation_mean": deviation.mean().item(), "deviation_max": deviation.max().item(), **errors}


if __name__ == "__main__":
    main()
