"""Spa3R pretraining step on CPU: float32 vs bf16 autocast (teacher passes and student; VGGT heads stay float32).

One step = forward (frozen teacher passes + student) + backward + AdamW update, the work of one Trainer step, at the
mid-size configuration of `bench_spa3r.py`. Both precisions start from the same weights and inputs; the loss
difference is that of the first step. Peak memory as in `bench_spa3r.py` (RSS above the level before the step).

    python bench/bench_pretrain.py [--views 8] [--repeats 3] [--threads 2]
"""

import argparse
import contextlib
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_spa3r import measure, mid_size_config  # noqa: E402

from modeling_spa3r import Spa3RForPretraining  # noqa: E402
from modeling_spa3r.modeling_spa3r import sample_view_mask  # noqa: E402


def train_step(model, optimizer, images, view_mask, bf16: bool) -> torch.Tensor:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        out = model(images, view_mask=view_mask)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return out.loss.detach().float()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224, help="square image size (multiple of 14)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reference = Spa3RForPretraining(mid_size_config()).train()
    images = torch.rand(args.batch, args.views, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    view_mask = sample_view_mask(args.batch, args.views, 0.5, generator=torch.Generator().manual_seed(2))
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, V={args.views}, {args.size}x{args.size}")
    print(f"{'precision':<10} {'step (s)':>9} {'peak (MiB)':>11} {'first loss':>11}")
    results = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        model = copy.deepcopy(reference)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=1e-4)
        first_loss = train_step(model, optimizer, images, view_mask, bf16)
        seconds, peak, _ = measure(lambda: train_step(model, optimizer, images, view_mask, bf16), args.repeats)
        results[name] = {"seconds": seconds, "peak_mib": peak, "loss": first_loss.item()}
        print(f"{name:<10} {results[name]['seconds']:>9.3f} {results[name]['peak_mib']:>11.0f} {results[name]['loss']:>11.5f}")
    speedup = results["fp32"]["seconds"] / results["bf16"]["seconds"]
    difference = abs(results["fp32"]["loss"] - results["bf16"]["loss"])
    print(f"bf16 speed-up {speedup:.2f}x; first-step loss difference |fp32 - bf16| = {difference:.2e} "
          f"({difference / results['fp32']['loss']:.2%} of the loss)")
    return results


if __name__ == "__main__":
    main()
