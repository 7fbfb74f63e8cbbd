"""Spa3R speed and memory on CPU at a mid-size configuration.

Times `Spa3RModel` encoding and one `Spa3RForPretraining` training step (forward + backward) in symmetric and
asymmetric masking mode for several view counts. The asymmetric step is measured twice on the same weights and
inputs: with the mask-free two-call global attention (ours) and with the dense (V·P)×(V·P) boolean mask of the
official code (baseline); the two losses must agree.

Peak memory = highest resident-set size sampled every 2 ms during the call, minus the RSS just before it.

    python bench/bench_spa3r.py [--views 4 8 12] [--repeats 3] [--threads 2]
"""

import argparse
import functools
import threading
import time

import psutil
import torch

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining
from modeling_spa3r.configuration_spa3r import VGGTConfig
from modeling_spa3r.modeling_spa3r import sample_view_mask
from modeling_spa3r.modeling_vggt import Aggregator


def mid_size_config() -> Spa3RConfig:
    """~1/4 of the real widths: aggregator 256 wide and 8 deep, Spa3R 256 wide with head dim 64, 224×224 views."""
    vggt = VGGTConfig(
        hidden_size=256,
        num_hidden_layers=8,
        num_attention_heads=4,
        patch_embed_type="conv",
        global_qk_norm="rmsnorm",
        camera_head_depth=2,
        camera_head_num_heads=8,
        dpt_features=64,
        dpt_out_channels=[32, 64, 128, 128],
        dpt_intermediate_layers=[1, 3, 5, 7],
    )
    teacher = dict(
        model_type="dinov3_vit", hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
        patch_size=16, num_register_tokens=4,
    )  # fmt: skip
    return Spa3RConfig(
        vggt_config=vggt.to_dict(),
        semantic_teacher_config=teacher,
        hidden_size=256,
        num_attention_heads=4,
        num_queries=64,
        num_encoder_layers=2,
        num_decoder_layers=2,
        semantic_size=256,
    )


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled in a thread)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def megabytes(self) -> float:
        return (self.peak - self.start) / 2**20


def measure(fn, repeats: int) -> tuple[float, float, object]:
    """Median seconds and max peak MiB over `repeats` runs (after one warm-up)."""
    result = fn()
    times, peaks = [], []
    for _ in range(repeats):
        with PeakRSS() as memory:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peaks.append(memory.megabytes)
    return sorted(times)[len(times) // 2], max(peaks), result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, nargs="+", default=[4, 8, 12])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224, help="square image size (multiple of 14)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Spa3RForPretraining(mid_size_config()).train()
    aggregator = model.spa3r.aggregator
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.size}x{args.size} views")
    print(f"trainable parameters {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f} M, "
          f"frozen {sum(p.numel() for p in model.parameters() if not p.requires_grad) / 1e6:.1f} M")
    header = f"{'V':>3} {'what':<34} {'time (s)':>9} {'peak (MiB)':>11}"
    print(header + "\n" + "-" * len(header))
    for num_views in args.views:
        images = torch.rand(args.batch, num_views, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
        view_mask = sample_view_mask(args.batch, num_views, 0.5, generator=torch.Generator().manual_seed(2))

        def encode():
            with torch.no_grad():
                return model.spa3r(images).latents

        def step(asymmetric: bool):
            model.zero_grad(set_to_none=True)
            out = model(images, view_mask=view_mask, asymmetric_masking=asymmetric)
            out.loss.backward()
            return out.loss.detach()

        rows = [("encode (Spa3RModel)", encode), ("train step, symmetric", functools.partial(step, False))]
        rows.append(("train step, asymmetric (ours)", functools.partial(step, True)))
        losses = {}
        for label, fn in rows:
            seconds, peak, result = measure(fn, args.repeats)
            losses[label] = result
            print(f"{num_views:>3} {label:<34} {seconds:>9.3f} {peak:>11.0f}")
        aggregator.forward = functools.partial(Aggregator.forward, aggregator, dense_view_mask_attention=True)
        try:
            seconds, peak, dense_loss = measure(functools.partial(step, True), args.repeats)
        finally:
            del aggregator.forward
        print(f"{num_views:>3} {'train step, asymmetric (dense mask)':<34} {seconds:>9.3f} {peak:>11.0f}")
        difference = (dense_loss - losses["train step, asymmetric (ours)"]).abs().item()
        assert difference < 1e-4, f"dense and split attention disagree: loss difference {difference}"
        print(f"{'':>3} loss difference ours vs dense mask: {difference:.2e}")


if __name__ == "__main__":
    main()
