"""Convert an official hustvl/Spa3-VLM directory (transformers-4.50 Qwen2.5-VL layout + `geometry_encoder.spa3r.*`,
`geometry_projector.*`, `geom_cross_attention.*`, `ln.*`, `geometry_adaptor.*`, `geometry_gate.*`) to this package's
layout, with a report of every key: converted, ignored as pretraining-only, or not mapped.

    python -m modeling_spa3r.convert_spa3_vlm --input Spa3-VLM --output spa3-vlm-hf \
        [--geometry-config spa3r_config.json | --reference-json parity.json]

The official config.json carries only Spa3R's width and query count; the other Spa3R sizes are the released
architecture unless `--geometry-config` (a Spa3RConfig json) or `--reference-json` (a parity json with a
`geometry_encoder_spec`) gives them. Tokenizer/processor files in the input directory are converted to a
`Spa3VLMProcessor` too.
"""

import argparse
import json
import sys
from pathlib import Path

from .configuration_spa3r import Spa3RConfig
from .modeling_spa3_vlm import Spa3VLMForConditionalGeneration


def convert_official_checkpoint(input_dir, output_dir=None, geometry_config: Spa3RConfig | None = None, strict=True):
    """Returns `(model, report)`; writes a `save_pretrained` directory (model and, if present, processor)."""
    if not (Path(input_dir) / "config.json").is_file():  # a local folder: say so before any Hub lookup
        raise FileNotFoundError(f"not found: {Path(input_dir) / 'config.json'} (expected an official Spa3-VLM directory)")
    model = Spa3VLMForConditionalGeneration.from_pretrained(str(input_dir), geometry_config=geometry_config)
    report = model.conversion_report
    problems = {kind: report[kind] for kind in ("unmapped", "missing", "mismatched") if report[kind]}
    if strict and problems:
        raise ValueError(f"official checkpoint did not convert cleanly: {problems}")
    if output_dir is not None:
        model.save_pretrained(output_dir)
        processor = _processor_from(input_dir)
        if processor is not None:
            processor.save_pretrained(output_dir)
    return model, report


def _processor_from(input_dir):
    from .processing_spa3_vlm import Spa3VLMProcessor

    if not any((Path(input_dir) / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return Spa3VLMProcessor.from_pretrained(str(input_dir))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeling_spa3r.convert_spa3_vlm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", "--checkpoint", dest="input", required=True, help="official hustvl/Spa3-VLM directory")
    parser.add_argument("--output", "--out", dest="output", required=True, help="where to write the converted directory")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--geometry-config", help="Spa3RConfig json giving the Spa3R sizes")
    sizes.add_argument("--reference-json", help="parity json whose geometry_encoder_spec gives the Spa3R sizes")
    parser.add_argument("--allow-problems", action="store_true", help="write the output even if keys did not map")
    args = parser.parse_args(argv)

    geometry_config = None
    if args.geometry_config:
        geometry_config = Spa3RConfig.from_json_file(args.geometry_config)
    elif args.reference_json:
        from .convert import spa3r_config_from_reference

        spec = json.loads(Path(args.reference_json).read_text())
        geometry_config = spa3r_config_from_reference(spec["geometry_encoder_spec"])
    try:
        _, report = convert_official_checkpoint(args.input, args.output, geometry_config, strict=not args.allow_problems)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"ignored {len(report['ignored_training_only'])} pretraining-only Spa3R tensors (decoder, heads, DINO, ...)")
    for kind in ("unmapped", "missing", "mismatched"):
        print(f"{kind}: {len(report[kind])}" + (f" {report[kind]}" if report[kind] else ""))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
