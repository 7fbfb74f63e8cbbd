"""Cost of the input checks on the hot paths (model forward, pretraining step), on CPU.

Times the checks a `Spa3RForPretraining` training step runs (`check_pixel_values`, `check_view_mask`,
`check_cameras`, `check_targets`) next to the step itself (fastest of the repeats for both) (forward + backward, the baseline) for the synthetic-tiny
preset (the smallest model, so the worst case for the ratio), and `check_pixel_values` alone at the released input
size (2 × 8 views of 518 × 518) next to a mid-size `Spa3RModel` forward on 224 × 224 views.

    python bench/bench_validation.py [--repeats 20] [--threads 2]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_spa3r import mid_size_config  # noqa: E402

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining, Spa3RModel  # noqa: E402
from modeling_spa3r.validation import check_cameras, check_pixel_values, check_targets, check_view_mask  # noqa: E402

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configuration" / "models" / "spa3r-synthetic-tiny.json"


def best_seconds(function, repeats: int) -> float:
    """Fastest of `repeats` calls: the least disturbed by other work on a shared machine."""
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def tiny_step_inputs(batch=2, views=4, height=84, width=112):
    generator = torch.Generator().manual_seed(0)
    patches = (height // 14) * (width // 14)
    extrinsics = torch.eye(3, 4).repeat(batch, views, 1, 1)
    extrinsics[..., 2, 3] = torch.arange(views, dtype=torch.float32)
    intrinsics = torch.tensor([[80.0, 0, width / 2], [0, 80.0, height / 2], [0, 0, 1]]).repeat(batch, views, 1, 1)
    return {
        "pixel_values": torch.rand(batch, views, 3, height, width, generator=generator),
        "view_mask": torch.tensor([[False, True, False, True]] * batch),
        "extrinsics": extrinsics,
        "intrinsics": intrinsics,
        "geometry_targets": torch.rand(batch, views, patches, 4, generator=generator),
        "depth_targets": torch.rand(batch, views, patches, 1, generator=generator),
        "semantic_targets": torch.rand(batch, views, patches, 29, generator=generator),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = Spa3RForPretraining(Spa3RConfig.from_json_file(TINY_CONFIG)).train()
    inputs = tiny_step_inputs()
    batch, views, _, height, width = inputs["pixel_values"].shape
    channels = {"geometry_targets": 4, "depth_targets": 1, "semantic_targets": 29}
    targets = {name: inputs[name] for name in channels}

    def checks():
        check_pixel_values(inputs["pixel_values"], 14, min_views=2)
        check_view_mask(inputs["view_mask"], batch, views)
        check_targets(targets, batch, views, (height // 14) * (width // 14), channels)
        check_cameras(inputs["extrinsics"], inputs["intrinsics"], batch, views)

    def step():
        model.zero_grad()
        model(**inputs).loss.backward()

    check_time = best_seconds(checks, args.repeats * 10)
    step_time = best_seconds(step, args.repeats)
    print(f"synthetic-tiny training step (B={batch}, V={views}, {height}x{width}), {args.threads} threads:")
    print(f"  baseline step (forward + backward): {step_time * 1e3:9.2f} ms")
    print(f"  input checks:                       {check_time * 1e3:9.3f} ms  ({100 * check_time / step_time:.2f} % of the step)")

    released = torch.rand(2, 8, 3, 518, 518)
    pixel_time = best_seconds(lambda: check_pixel_values(released, 14), args.repeats)
    encoder = Spa3RModel(mid_size_config()).eval()
    mid_views = torch.rand(2, 8, 3, 224, 224)
    with torch.inference_mode():
        forward_time = best_seconds(lambda: encoder(mid_views), max(3, args.repeats // 5))
        mid_pixel_time = best_seconds(lambda: check_pixel_values(mid_views, 14), args.repeats)
    print("check_pixel_values alone:")
    print(f"  released input 2x8x3x518x518:       {pixel_time * 1e3:9.3f} ms")
    print(f"  mid-size Spa3RModel forward, 2x8x3x224x224 (baseline): {forward_time * 1e3:9.1f} ms; "
          f"its pixel check {mid_pixel_time * 1e3:.3f} ms ({100 * mid_pixel_time / forward_time:.3f} %)")  # fmt: skip


if __name__ == "__main__":
    main()
