"""Convert official checkpoints to this package's layout.

- the Spa3R Lightning checkpoint `spa3r.ckpt` (`state_dict`, prefix `model.`) → `Spa3RModel` / `Spa3RForPretraining`;
- facebook/VGGT-1B `model.safetensors` → `VGGTModel`, or into a Spa3R backbone (its global q/k LayerNorms become
  weight-only RMSNorms, as the official Spa3R was trained).

Files are read with safetensors or `torch.load(..., weights_only=True)` (never plain pickle). Every key that is
unknown, missing or mis-shaped is reported by name.

    python -m modeling_spa3r.convert spa3r --checkpoint spa3r.ckpt --out spa3r-hf [--pretraining]
    python -m modeling_spa3r.convert vggt --checkpoint VGGT-1B/model.safetensors --out vggt-1b-hf
"""

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .configuration_spa3r import Spa3RConfig, VGGTConfig
from .validation import DataError

# keys of the official checkpoint that only the pretraining model uses
PRETRAINING_PREFIXES = ("camera_head.", "depth_head.", "pose_tokenizer.", "decoder.", "heads.", "depth_prob.", "dino.")
DINO_PREFIX = "dino."
# keys of `Spa3RModel`; inside `Spa3RForPretraining` they live under `spa3r.`
ENCODER_PREFIXES = ("aggregator.", "projection.", "query_embed.", "encoder.")


@dataclass
class ConversionReport:
    """What happened to every key: loaded, ignored on purpose (with the reason), or a problem."""

    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.mismatched)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.ignored:
            reasons: dict[str, int] = {}
            for reason in self.ignored.values():
                reasons[reason] = reasons.get(reason, 0) + 1
            lines += [f"ignored {n} tensors: {reason}" for reason, n in reasons.items()]
        for name, keys in (("unexpected", self.unexpected), ("missing", self.missing)):
            if keys:
                lines.append(f"{name} ({len(keys)}): " + ", ".join(keys))
        for key, (got, want) in self.mismatched.items():
            lines.append(f"shape mismatch {key}: checkpoint {got} vs model {want}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise ValueError("checkpoint does not match the model:\n" + self.summary())


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely: `.safetensors`, or a torch file with `weights_only=True` (Lightning `state_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors / torch.load raise many types for corrupt or truncated files
        raise DataError(path, f"corrupt or truncated checkpoint ({type(error).__name__}: {str(error).splitlines()[0]})") from error
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(checkpoint).__name__})")
    return checkpoint


def match_state_dict(
    source: dict[str, torch.Tensor], model: torch.nn.Module, ignore: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Compare renamed `source` keys with `model.state_dict()`; `ignore` maps key regexes to the reason."""
    ignore = ignore or {}
    target = model.state_dict()
    report = ConversionReport()
    converted = {}
    for key, tensor in source.items():
        reason = next((why for pattern, why in ignore.items() if re.match(pattern, key)), None)
        if reason is not None:
            report.ignored[key] = reason
        elif key not in target:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(target[key].shape):
            report.mismatched[key] = (tuple(tensor.shape), tuple(target[key].shape))
        else:
            converted[key] = tensor
            report.loaded.append(key)
    report.missing = sorted(set(target) - set(converted) - set(report.mismatched))
    return converted, report


def vggt_to_spa3r_backbone(vggt_state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """facebook/VGGT-1B keys → Spa3R backbone keys: the global q/k-norm biases are dropped (RMSNorm has none)."""
    dropped = {}
    kept = {}
    for key, tensor in vggt_state_dict.items():
        if re.match(r"aggregator\.global_blocks\.\d+\.attn\.[qk]_norm\.bias$", key):
            dropped[key] = "Spa3R's global q/k norms are weight-only RMSNorms"
        elif key.startswith("track_head."):
            dropped[key] = "VGGT track head is not used"
        else:
            kept[key] = tensor
    return kept, dropped


def convert_spa3r_state_dict(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module, prefix: str = "model."
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official Spa3R keys (with `prefix`) → keys of `model` (a Spa3RModel or Spa3RForPretraining).

    Our module names are the official ones (the encoder part sits under `spa3r.` in the pretraining model); keys the
    model has no use for are reported as ignored.
    """
    stripped = {}
    foreign = []
    for key, tensor in state_dict.items():
        if key.startswith(prefix):
            stripped[key[len(prefix) :]] = tensor
        else:
            foreign.append(key)
    from .modeling_spa3r import Spa3RForPretraining

    if isinstance(model, Spa3RForPretraining):
        stripped = {("spa3r." + k if k.startswith(ENCODER_PREFIXES) else k): v for k, v in stripped.items()}
        ignore = {r"point_head\.": "VGGT point head is not used by Spa3R"}
        if model.semantic_teacher is None:
            ignore[r"dino\."] = "no semantic teacher configured (semantic targets are passed in)"
        else:
            stripped = _convert_dino_keys(stripped)
    else:
        ignore = {re.escape(p): "pretraining-only module" for p in PRETRAINING_PREFIXES}
        ignore[r"point_head\."] = "VGGT point head is not used by Spa3R"
    converted, report = match_state_dict(stripped, model, ignore)
    report.unexpected = foreign + report.unexpected
    return converted, report


def _convert_dino_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.hub DINOv3 keys under `dino.` → transformers `DINOv3ViTModel` keys under `semantic_teacher.model.`."""
    out = {}
    for key, tensor in state_dict.items():
        if not key.startswith(DINO_PREFIX):
            out[key] = tensor
            continue
        for new_key, new_tensor in dinov3_hub_to_hf(key[len(DINO_PREFIX) :], tensor):
            out["semantic_teacher.model." + new_key] = new_tensor
    return out


_DINOV3_RENAMES = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^storage_tokens$", "embeddings.register_tokens"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings."),
    (r"^rope_embed\.periods$", None),
    (r"^blocks\.(\d+)\.norm1\.", r"model.layer.\1.norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"model.layer.\1.norm2."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"model.layer.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.ls1\.gamma$", r"model.layer.\1.layer_scale1.lambda1"),
    (r"^blocks\.(\d+)\.ls2\.gamma$", r"model.layer.\1.layer_scale2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"model.layer.\1.mlp.up_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"model.layer.\1.mlp.down_proj."),
    (r"^norm\.", "norm."),
]


def dinov3_hub_to_hf(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One torch.hub DINOv3 ViT key → transformers DINOv3ViTModel keys (qkv is split into q/k/v; the hub's
    zero k-bias is dropped because the HF model has no key bias)."""
    match = re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
    if match:
        layer, kind = match.groups()
        q, k, v = tensor.chunk(3, dim=0)
        parts = [("q_proj", q), ("v_proj", v)] + ([("k_proj", k)] if kind == "weight" else [])
        return [(f"model.layer.{layer}.attention.{name}.{kind}", t) for name, t in parts]
    if re.match(r"^blocks\.\d+\.attn\.qkv\.bias_mask$", key):
        return []
    if key == "mask_token":
        return [("embeddings.mask_token", tensor.reshape(1, 1, -1))]
    for pattern, replacement in _DINOV3_RENAMES:
        if re.match(pattern, key):
            return [] if replacement is None else [(re.sub(pattern, replacement, key), tensor)]
    return [(key, tensor)]


def spa3r_config_from_reference(spec: dict) -> Spa3RConfig:
    """Spa3RConfig from a reference description (a parity json's `config`, or the VLM json's
    `geometry_encoder_spec`): keys `aggregator`, `camera_head`, `depth_head`, `spa3r`, optional `dino_stub`."""
    aggregator, camera, depth, spa3r = (spec[k] for k in ("aggregator", "camera_head", "depth_head", "spa3r"))
    if aggregator.get("aa_order", ["frame", "global"]) != ["frame", "global"] or aggregator.get("aa_block_size", 1) != 1:
        raise ValueError("only aa_order ['frame', 'global'] with aa_block_size 1 is supported")
    patch_embed = {"conv": "conv", "dinov2_vitl14_reg": "dinov2"}.get(aggregator["patch_embed"])
    if patch_embed is None:
        raise ValueError(f"unsupported patch embed {aggregator['patch_embed']!r}")
    vit = spec.get("patch_embed_vit") or aggregator.get("patch_embed_vit") or {}
    image_size = aggregator.get("img_size", 518)
    vggt = VGGTConfig(
        image_size=vit.get("img_size", image_size if isinstance(image_size, int) else 518),
        patch_size=aggregator["patch_size"],
        hidden_size=aggregator["embed_dim"],
        num_hidden_layers=aggregator["depth"],
        num_attention_heads=aggregator["num_heads"],
        mlp_ratio=aggregator["mlp_ratio"],
        num_register_tokens=aggregator["num_register_tokens"],
        layerscale_init=aggregator["init_values"],
        rope_theta=aggregator["rope_freq"],
        patch_embed_type=patch_embed,
        patch_embed_num_layers=vit.get("depth", 24),
        patch_embed_num_heads=vit.get("num_heads", 16),
        patch_embed_layerscale_init=vit.get("init_values", 1.0),
        frame_qk_norm="layernorm",
        global_qk_norm="rmsnorm",
        camera_head_depth=camera["trunk_depth"],
        camera_head_num_heads=camera["num_heads"],
        camera_num_iterations=camera["num_iterations"],
        dpt_features=depth["features"],
        dpt_out_channels=depth["out_channels"],
        dpt_intermediate_layers=depth["intermediate_layer_idx"],
        dpt_frames_chunk_size=depth.get("frames_chunk_size", 8),
        use_point_head="point_head" in spec,
    )
    encoder = spa3r["encoder"]
    semantic_size = spec["dino_stub"]["embed_dim"] if "dino_stub" in spec else 1024
    return Spa3RConfig(
        vggt_config=vggt,
        hidden_size=spa3r["embed_dim"],
        num_attention_heads=spa3r["num_heads"],
        num_queries=spa3r["num_queries"],
        num_encoder_layers=spa3r["num_encoder_layers"],
        num_decoder_layers=spa3r["num_decoder_layers"],
        num_register_tokens=spa3r["num_register_tokens"],
        mlp_ratio=encoder.get("ffn_ratio", 4),
        rope_theta=encoder.get("rope_freq", 100),
        mask_ratio=spa3r["mask_ratio"],
        semantic_size=semantic_size,
    )


def convert_spa3r_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
    config: Spa3RConfig | None = None,
    pretraining: bool = False,
    vggt_checkpoint: str | Path | None = None,
    strict: bool = True,
):
    """Official `spa3r.ckpt` (optionally plus facebook/VGGT-1B weights for the backbone) → our model.

    Returns `(model, report)`; writes a `save_pretrained` directory when `out_dir` is given.
    """
    from .modeling_spa3r import Spa3RForPretraining, Spa3RModel

    state_dict = load_state_dict_file(checkpoint)  # read (and checked) before the full-size model is built
    if vggt_checkpoint is not None:
        backbone, _ = vggt_to_spa3r_backbone(load_state_dict_file(vggt_checkpoint))
        state_dict = {**{"model." + k: v for k, v in backbone.items()}, **state_dict}
    config = config or Spa3RConfig()
    model_class = Spa3RForPretraining if pretraining else Spa3RModel
    model = model_class(config)
    converted, report = convert_spa3r_state_dict(state_dict, model)
    if strict:
        report.raise_if_failed()
    model.load_state_dict(converted, strict=False)
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return model, report


def convert_vggt_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None, config: VGGTConfig | None = None, strict: bool = True):
    """facebook/VGGT-1B `model.safetensors` → `VGGTModel` (LayerNorm q/k norms kept). Returns `(model, report)`."""
    from .modeling_vggt import VGGTModel

    state_dict = load_state_dict_file(checkpoint)  # read (and checked) before the full-size model is built
    model = VGGTModel(config or VGGTConfig())
    converted, report = match_state_dict(state_dict, model, {r"track_head\.": "VGGT track head is not implemented"})
    if strict:
        report.raise_if_failed()
    model.load_state_dict(converted, strict=False)
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return model, report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeling_spa3r.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    spa3r = sub.add_parser("spa3r", help="official spa3r.ckpt → Spa3RModel / Spa3RForPretraining directory")
    spa3r.add_argument("--checkpoint", "--input", dest="checkpoint", required=True, help="spa3r.ckpt (Lightning) or a .safetensors state dict")
    spa3r.add_argument("--vggt-checkpoint", help="facebook/VGGT-1B model.safetensors, if spa3r.ckpt lacks the backbone")
    spa3r.add_argument("--config", help="config.json of a Spa3RConfig (default: the released architecture)")
    spa3r.add_argument("--pretraining", action="store_true", help="convert the full pretraining model")
    spa3r.add_argument("--out", "--output", dest="out", required=True, help="folder to write")
    vggt = sub.add_parser("vggt", help="facebook/VGGT-1B model.safetensors → VGGTModel directory")
    vggt.add_argument("--checkpoint", "--input", dest="checkpoint", required=True, help="VGGT-1B model.safetensors")
    vggt.add_argument("--config", help="config.json of a VGGTConfig (default: VGGT-1B)")
    vggt.add_argument("--out", "--output", dest="out", required=True, help="folder to write")
    # listed for the help text; `spa3r convert vlm` / `main(["vlm", ...])` go to convert_spa3_vlm's own parser
    sub.add_parser("vlm", help="official hustvl/Spa3-VLM folder → Spa3VLMForConditionalGeneration folder (vlm --help)")
    for p in (spa3r, vggt):
        p.add_argument("--no-strict", action="store_true", help="write the model even if keys are missing/unexpected")
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["vlm"]:
        from .convert_spa3_vlm import main as vlm_main

        return vlm_main(argv[1:])
    args = parser.parse_args(argv)
    if args.kind == "spa3r":
        config = Spa3RConfig.from_json_file(args.config) if args.config else None
        _, report = convert_spa3r_checkpoint(
            args.checkpoint, args.out, config, args.pretraining, args.vggt_checkpoint, strict=not args.no_strict
        )
    else:
        config = VGGTConfig.from_json_file(args.config) if args.config else None
        _, report = convert_vggt_checkpoint(args.checkpoint, args.out, config, strict=not args.no_strict)
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
