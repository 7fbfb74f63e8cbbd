"""Spa3R speed and memory on CPU: the dense-mask formulation (the official one) against ours, one process per case.

Cases, on the same weights (seed 0) and inputs, each in a fresh process so peak memory is its own:
- `dense`: the official formulation — the dense (V·P)×(V·P) boolean mask in the asymmetric global attention, the
  depth teacher at full resolution then resized nearest, the decoder's latent rows projected once per view and
  PRoPE's index copies (the baseline);
- `ours`: mask-free two-call SDPA, depth teacher only at the sampled pixels, shared latent-row projections,
  PRoPE slices (all exact: the loss equals the baseline's within float tolerance, checked);
- `ours_bf16`: `ours` with `teacher_dtype="bfloat16"` (frozen teachers in bf16, student and losses float32);
- `ours_cached`: `ours`' symmetric step with the teachers' targets and cameras precomputed once outside the timed
  region (`teacher_outputs`, what `spa3r cache-teachers` stores and `--teacher_cache` supplies); its speed-up is
  also printed against `ours` symmetric, and its loss checked equal to it.
For each: encode (`Spa3RModel`), one asymmetric and one symmetric training step (forward + backward) at V = 4, 8, 12,
and encode alone at V = 16, 24, 32 for growth; ratios are baseline time / case time and case peak / baseline peak.
The run ends with the issue's targets, each with its measured value: asymmetric fp32 step ≥ 1.15× the baseline at
V=8, with bf16 teachers ≥ 2.5×, symmetric with the cache ≥ 1.5× without it, encode peak memory ≤ the baseline.
Peak memory = highest resident-set size sampled every 2 ms during the call, minus the RSS just before it.

Presets: `mid` (default; aggregator 512 wide × 6 deep, Spa3R 384 wide, 128 queries, 3+3 layers, 224×294, fp32),
`small` (aggregator 256 × 8, Spa3R 256, 64 queries, 2+2 layers, 224×224), `tiny` (checks that every case runs).

    python bench/bench_spa3r.py [--preset mid] [--views 4 8 12] [--encode_views 16 24 32] [--repeats 3] [--threads 2]
"""

import argparse
import functools
import json
import subprocess
import sys
import threading
import time

import psutil
import torch

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining
from modeling_spa3r.configuration_spa3r import VGGTConfig
from modeling_spa3r.modeling_spa3r import sample_view_mask
from modeling_spa3r.modeling_vggt import Aggregator
from modeling_spa3r.training.teacher_cache import teacher_outputs


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


def mid_512_config() -> Spa3RConfig:
    """The `mid` preset: aggregator 512 wide × 6 deep, Spa3R 384 wide, 128 queries, 3+3 layers (views 224×294)."""
    vggt = VGGTConfig(
        hidden_size=512,
        num_hidden_layers=6,
        num_attention_heads=8,
        patch_embed_type="conv",
        global_qk_norm="rmsnorm",
        camera_head_depth=2,
        camera_head_num_heads=8,
        dpt_features=128,
        dpt_out_channels=[64, 128, 256, 256],
        dpt_intermediate_layers=[1, 2, 4, 5],
        use_point_head=False,
    )
    teacher = dict(
        model_type="dinov3_vit", hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
        patch_size=16, num_register_tokens=4,
    )  # fmt: skip
    return Spa3RConfig(
        vggt_config=vggt.to_dict(),
        semantic_teacher_config=teacher,
        hidden_size=384,
        num_attention_heads=6,
        num_queries=128,
        num_encoder_layers=3,
        num_decoder_layers=3,
        semantic_size=384,
    )


def tiny_config() -> Spa3RConfig:
    """A few-kilobyte model for checking that every case runs (tests): aggregator 32 × 2, Spa3R 32, 28×42 views."""
    vggt = VGGTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_embed_type="conv", global_qk_norm="rmsnorm",
        camera_head_depth=1, camera_head_num_heads=2, dpt_features=16, dpt_out_channels=[8, 16, 32, 32],
        dpt_intermediate_layers=[0, 0, 1, 1],
    )  # fmt: skip
    teacher = dict(
        model_type="dinov3_vit", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        patch_size=16, num_register_tokens=4,
    )  # fmt: skip
    return Spa3RConfig(
        vggt_config=vggt.to_dict(), semantic_teacher_config=teacher, hidden_size=32, num_attention_heads=4,
        num_queries=8, num_encoder_layers=1, num_decoder_layers=1, semantic_size=32, semantic_image_size=64,
    )  # fmt: skip


PRESETS = {"mid": (mid_512_config, (224, 294)), "small": (mid_size_config, (224, 224)), "tiny": (tiny_config, (28, 42))}
CASES = ("dense", "ours", "ours_bf16", "ours_cached")


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


def official_formulation(model: Spa3RForPretraining) -> None:
    """Put back the formulation the baseline measures: dense mask, full-resolution depth teacher, per-view
    latent-row projections in the decoder, PRoPE index copies."""
    from modeling_spa3r import modeling_spa3r

    aggregator, decoder = model.spa3r.aggregator, model.decoder
    aggregator.forward = functools.partial(Aggregator.forward, aggregator, dense_view_mask_attention=True)
    decoder.forward = lambda *args, shared_rows=0, copies=1, **kwargs: type(decoder).forward(decoder, *args, **kwargs)
    prope_init = modeling_spa3r.PRoPE.__init__

    def init_with_index_copies(self, *args, **kwargs):
        prope_init(self, *args, **kwargs)
        self.spatial_start = None

    modeling_spa3r.PRoPE.__init__ = init_with_index_copies


def run_case(case: str, preset: str, views: list[int], encode_only: bool, batch: int, repeats: int) -> list[dict]:
    """One case in this process → rows {views, what, seconds, mib, loss}."""
    make_config, (height, width) = PRESETS[preset]
    config = make_config()
    config.sampled_depth_target = case != "dense"
    config.teacher_dtype = "bfloat16" if case == "ours_bf16" else "float32"
    torch.manual_seed(0)
    model = Spa3RForPretraining(config).train()
    if case == "dense":
        official_formulation(model)
    rows = []
    for num_views in views:
        images = torch.rand(batch, num_views, 3, height, width, generator=torch.Generator().manual_seed(1))
        view_mask = sample_view_mask(batch, num_views, 0.5, generator=torch.Generator().manual_seed(2))

        def encode():
            with torch.no_grad():
                return model.spa3r(images).latents.sum()

        cached = teacher_outputs(model, images) if case == "ours_cached" else {}  # as the cache supplies them

        def step(asymmetric: bool):
            model.zero_grad(set_to_none=True)
            out = model(images, view_mask=view_mask, asymmetric_masking=asymmetric, canonical_cameras=bool(cached), **cached)
            out.loss.backward()
            return out.loss.detach()

        kinds = {"encode": encode}
        if case == "ours_cached":  # the cache serves only the symmetric step; encode is `ours`'
            kinds = {"symmetric": functools.partial(step, False)}
        elif not encode_only:
            kinds.update(asymmetric=functools.partial(step, True), symmetric=functools.partial(step, False))
        for what, fn in kinds.items():
            seconds, peak, result = measure(fn, repeats)
            rows.append({"views": num_views, "what": what, "seconds": seconds, "mib": peak, "value": result.item()})
    return rows


#: (what, case, reference case, target, speed?): the issue's targets; speed = reference time / case time ≥ target,
#: else memory = case peak / reference peak ≤ target
TARGETS = (
    ("asymmetric", "ours", "dense", 1.15, True),
    ("asymmetric", "ours_bf16", "dense", 2.5, True),
    ("symmetric", "ours_cached", "ours", 1.5, True),
    ("encode", "ours", "dense", 1.0, False),
)


def print_targets(results: dict) -> None:
    """One line per target and V measured (V=8 is the issue's point for the step targets; memory at every V)."""
    print("\ntargets")
    for what, case, reference, target, speed in TARGETS:
        for num_views in sorted({v for (_, v, w) in results if w == what}):
            row, base = results.get((case, num_views, what)), results.get((reference, num_views, what))
            if row is None or base is None:
                continue
            if speed:
                label, value = f"time {reference} / {case}", base["seconds"] / row["seconds"]
                met, wanted = value >= target, f">= {target:.2f}x"
            else:
                label, value = f"peak {case} / {reference}", row["mib"] / base["mib"] if base["mib"] > 0 else float("nan")
                met, wanted = value <= target, f"<= {target:.2f}"
            print(f"  V={num_views:>2} {what:<10} {label:<26} {value:>6.2f}  target {wanted:<9} {'met' if met else 'NOT MET'}")


def main(argv=None) -> dict:
    """Run every (case, V) in its own process → {(case, V, what): row} (a worker prints its rows instead)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mid")
    parser.add_argument("--views", type=int, nargs="+", default=[4, 8, 12])
    parser.add_argument("--encode_views", type=int, nargs="*", default=[16, 24, 32])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a worker process: one case, JSON out
    parser.add_argument("--encode_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.preset, args.views, args.encode_only, args.batch, args.repeats)))
        return
    height, width = PRESETS[args.preset][1]
    print(f"torch {torch.__version__}, {args.threads} threads, preset {args.preset}, batch {args.batch}, {height}x{width} views")
    model = Spa3RForPretraining(PRESETS[args.preset][0]())
    print(f"trainable parameters {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f} M, "
          f"frozen {sum(p.numel() for p in model.parameters() if not p.requires_grad) / 1e6:.1f} M")
    del model
    results = {}
    jobs = [(case, views, False) for case in args.cases for views in args.views]
    jobs += [(case, views, True) for case in args.cases if case != "ours_cached" for views in args.encode_views]
    for case, num_views, encode_only in jobs:
        command = [sys.executable, __file__, "--case", case, "--preset", args.preset, "--views", str(num_views),
                   "--batch", str(args.batch), "--repeats", str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
        if encode_only:
            command.append("--encode_only")
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        for row in json.loads(output.strip().splitlines()[-1]):
            results[case, row["views"], row["what"]] = row
    header = f"{'V':>3} {'what':<11} {'case':<11} {'time (s)':>9} {'peak (MiB)':>11} {'speed-up':>9} {'mem ratio':>10} {'loss':>10}"
    print(header + "\n" + "-" * len(header))
    for (case, num_views, what), row in sorted(results.items(), key=lambda item: (item[0][1], item[0][2], CASES.index(item[0][0]))):
        baseline = results.get(("dense", num_views, what))
        speedup = f"{baseline['seconds'] / row['seconds']:>8.2f}x" if baseline else f"{'-':>9}"
        memory = f"{row['mib'] / baseline['mib']:>10.2f}" if baseline and baseline["mib"] > 0 else f"{'-':>10}"
        value = f"{row['value']:>10.5f}" if what != "encode" else f"{'':>10}"
        print(f"{num_views:>3} {what:<11} {case:<11} {row['seconds']:>9.3f} {row['mib']:>11.0f} {speedup} {memory} {value}")
    print_targets(results)
    for (case, num_views, what), row in results.items():
        baseline = results.get(("dense" if case == "ours" else "ours", num_views, what))
        if case in ("ours", "ours_cached") and what != "encode" and baseline:
            difference = abs(row["value"] - baseline["value"])
            assert difference < 1e-4, f"{case} and its baseline disagree at V={num_views} {what}: {difference}"
    return results


if __name__ == "__main__":
    main()
