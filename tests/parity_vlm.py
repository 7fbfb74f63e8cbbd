"""Spa3-VLM parity with the authors' implementation.

`check_vlm_set(json_path, safetensors_path, hf_dir)` loads an official-layout Spa3-VLM directory (Spa3R sizes from the
json's `geometry_encoder_spec`), feeds every recorded case and compares inputs_embeds, logits, hidden states, loss,
position ids, the geometry stages and greedy tokens / step logits. Batch-1 cases are compared with their own
tensors; every row of a batch > 1 case is compared with the batch-1 case of the same sample (the official batch > 1
tensors mix samples, which we do not copy). Only positions where the attention mask is 1 are compared.

`check_fusion_stages(json_path, safetensors_path)` checks the `vlm_b0.*` fusion stages of a Spa3R set (and `vlm.*`
when its batch is 1), from the recorded latents and from our Spa3R's latents.
"""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from modeling_spa3r.configuration_spa3_vlm import Spa3VLMConfig
from modeling_spa3r.convert import convert_spa3r_state_dict, spa3r_config_from_reference
from modeling_spa3r.modeling_spa3_vlm import OFFICIAL_KEY_MAPPING, Spa3VLMForConditionalGeneration, Spa3VLMGeometryFusion
from modeling_spa3r.modeling_spa3r import Spa3RModel


def _tolerances(meta: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    suggested = meta.get("determinism", {}).get("suggested_tolerance", {})
    default = suggested.get("default", suggested)
    hidden = suggested.get("hidden_states", default)
    return (default.get("atol", 2e-5), default.get("rtol", 1e-4)), (hidden.get("atol", 1e-3), hidden.get("rtol", 1e-3))


def assert_close(name: str, ours: torch.Tensor, reference: torch.Tensor, tolerance: tuple[float, float]) -> float:
    """|ours − ref| ≤ atol + rtol·|ref| elementwise; returns the max |diff|."""
    atol, rtol = tolerance
    ours = ours.detach().float().cpu()
    assert ours.shape == reference.shape, f"{name}: shape {tuple(ours.shape)} != reference {tuple(reference.shape)}"
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    diff = (ours - reference).abs()
    assert (diff <= atol + rtol * reference.abs()).all(), f"{name}: max |diff| {diff.max():.3g} > {atol} + {rtol}·|ref|"
    return diff.max().item()


class _VLMSet:
    def __init__(self, json_path, safetensors_path, hf_dir):
        self.meta = json.loads(Path(json_path).read_text())
        self.t = load_file(str(safetensors_path))
        self.tol, self.hidden_tol = _tolerances(self.meta)
        geometry_config = spa3r_config_from_reference(self.meta["geometry_encoder_spec"])
        self.model = Spa3VLMForConditionalGeneration.from_pretrained(str(hf_dir), geometry_config=geometry_config).eval()
        config = self.model.config
        self.image_token_id, self.video_token_id = config.image_token_id, config.video_token_id
        self.num_samples = len([k for k in self.t if re.fullmatch(r"inputs\.images\.\d+", k)])
        self.cases = sorted({k.split(".")[1] for k in self.t if k.endswith(".input_ids") and k.startswith("inputs.")})
        self.max_diff: dict[str, float] = {}

    def check(self, name, ours, reference, tolerance=None):
        self.max_diff[name] = assert_close(name, ours, reference, tolerance or self.tol)

    def inputs(self, case: str) -> dict:
        ids = self.t[f"inputs.{case}.input_ids"]
        samples = self.samples_of(case)
        mm_token_type_ids = torch.zeros_like(ids)
        mm_token_type_ids[ids == self.image_token_id] = 1
        mm_token_type_ids[ids == self.video_token_id] = 2
        inputs = dict(
            input_ids=ids,
            attention_mask=self.t[f"inputs.{case}.attention_mask"],
            mm_token_type_ids=mm_token_type_ids,
            pixel_values=torch.cat([self.t[f"inputs.pixel_values.{s}"] for s in samples]),
            image_grid_thw=torch.cat([self.t[f"inputs.image_grid_thw.{s}"] for s in samples]),
            geometry_pixel_values=torch.stack([self.t[f"inputs.images.{s}"] for s in samples]),  # (B, V, 3, H, W)
        )
        if f"inputs.{case}.labels" in self.t:
            inputs["labels"] = self.t[f"inputs.{case}.labels"]
        return inputs

    def samples_of(self, case: str) -> list[int]:
        """Batch-1 cases: `alone<k>` is sample k, others sample 0; batch B cases hold samples 0..B-1 in order."""
        batch = self.t[f"inputs.{case}.input_ids"].shape[0]
        if batch > 1:
            return list(range(batch))
        match = re.match(r"alone(\d+)", case)
        return [int(match.group(1)) if match else 0]

    def valid_ids(self, case: str, row: int) -> torch.Tensor:
        mask = self.t[f"inputs.{case}.attention_mask"][row].bool()
        return self.t[f"inputs.{case}.input_ids"][row][mask]

    def single_case_with_prefix(self, case: str, row: int, need: str) -> str:
        """The batch-1 case whose valid tokens start with row `row` of `case` and that stores tensor `need`."""
        ids = self.valid_ids(case, row)
        for other in self.cases:
            if self.t[f"inputs.{other}.input_ids"].shape[0] != 1 or f"outputs.{other}.{need}" not in self.t:
                continue
            other_ids = self.valid_ids(other, 0)
            if len(other_ids) >= len(ids) and torch.equal(other_ids[: len(ids)], ids):
                return other
        raise AssertionError(f"no batch-1 reference with {need} for row {row} of case {case}")

    def check_forward(self, case: str) -> None:
        inputs = self.inputs(case)
        with torch.no_grad():
            out = self.model(**inputs, output_hidden_states=True)
        mask = inputs["attention_mask"].bool()  # (B, L)
        batch = mask.shape[0]
        hidden = torch.stack(out.hidden_states)  # (layers + 1, B, L, C)
        # M-RoPE positions as the language model saw them
        positions, _ = self.model.model.get_rope_index(
            inputs["input_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
        )
        for row in range(batch):
            ref_case = case if batch == 1 else self.single_case_with_prefix(case, row, "logits")
            ref_mask = self.t[f"inputs.{ref_case}.attention_mask"][0].bool()
            n = int(mask[row].sum())
            ref_valid = ref_mask.nonzero()[:n, 0]
            label = f"{case}[{row}] vs {ref_case}"
            for name, ours, tolerance in (
                ("inputs_embeds", out.hidden_states[0][row][mask[row]], self.tol),
                ("logits", out.logits[row][mask[row]], self.tol),
            ):
                reference = self.t[f"outputs.{ref_case}.{name}"][0][ref_valid]
                self.check(f"{label}.{name}", ours, reference, tolerance)
            self.check(
                f"{label}.hidden_states",
                hidden[:, row][:, mask[row]],
                self.t[f"outputs.{ref_case}.hidden_states"][:, 0][:, ref_valid],
                self.hidden_tol,
            )
            reference_positions = self.t[f"outputs.{ref_case}.position_ids"][:, 0][:, ref_valid]
            assert torch.equal(positions[:, row][:, mask[row]], reference_positions), f"{label}: position ids differ"
        if batch == 1 and f"outputs.{case}.geometry.latents" in self.t:
            image_outputs = out.image_outputs
            self.check(f"{case}.geometry.latents", image_outputs.geometry_latents, self.t[f"outputs.{case}.geometry.latents"])
            self.check(
                f"{case}.geometry.fused_image_embeds",
                torch.cat(image_outputs.pooler_output),
                self.t[f"outputs.{case}.geometry.fused_image_embeds"],
            )
        if "labels" in inputs:
            self.check_loss(case, out.loss, inputs["labels"])

    def check_loss(self, case: str, loss: torch.Tensor, labels: torch.Tensor) -> None:
        """Batch 1: the case's loss. Batch B: token-weighted mean of each sample's batch-1 loss."""
        if labels.shape[0] == 1:
            self.check(f"{case}.loss", loss, self.t[f"outputs.{case}.loss"])
            return
        total, count = 0.0, 0
        for row in range(labels.shape[0]):
            ref_case = self.single_case_with_prefix(case, row, "loss")
            n = int((self.t[f"inputs.{ref_case}.labels"][0, 1:] != -100).sum())
            total, count = total + self.t[f"outputs.{ref_case}.loss"].item() * n, count + n
        self.check(f"{case}.loss (per-sample)", loss, torch.tensor(total / count))

    def check_generate(self, case: str) -> None:
        inputs = self.inputs(case)
        reference_tokens = self.t[f"outputs.{case}.generate.new_tokens"]
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=reference_tokens.shape[1],
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.meta["token_ids"]["pad_token_id"],
                eos_token_id=self.meta["token_ids"]["eos_token_id_for_generate"],
            )
        new_tokens = out.sequences[:, inputs["input_ids"].shape[1] :]
        step_logits = torch.stack(out.logits, dim=1)  # (B, steps, vocab)
        for row in range(new_tokens.shape[0]):
            ref_case = case if new_tokens.shape[0] == 1 else self.single_case_with_prefix(case, row, "generate.new_tokens")
            label = f"{case}[{row}] vs {ref_case}"
            expected = self.t[f"outputs.{ref_case}.generate.new_tokens"][0]
            assert torch.equal(new_tokens[row], expected), f"{label}: generated {new_tokens[row].tolist()} != {expected.tolist()}"
            self.check(f"{label}.step_logits", step_logits[row], self.t[f"outputs.{ref_case}.generate.step_logits"][0])


def check_vlm_set(json_path, safetensors_path, hf_dir) -> dict[str, float]:
    """Assert parity on every case of a `spa3_vlm_*` set; returns the max |diff| of every compared tensor."""
    vlm = _VLMSet(json_path, safetensors_path, hf_dir)
    report = vlm.model.conversion_report
    assert not (report["unmapped"] or report["missing"] or report["mismatched"]), f"conversion problems: {report}"
    assert report["ignored_training_only"], "the official checkpoint's pretraining-only Spa3R keys were not reported"
    assert vlm.cases, "no cases in the set"
    for case in vlm.cases:
        if f"outputs.{case}.logits" in vlm.t:
            vlm.check_forward(case)
        if f"outputs.{case}.generate.new_tokens" in vlm.t:
            vlm.check_generate(case)
    return vlm.max_diff


def _fusion_from_official(weights: dict[str, torch.Tensor], geometry_config) -> Spa3VLMGeometryFusion:
    """A fusion module shaped and loaded from official `geometry_projector.*`/`geom_cross_attention.*`/... weights."""
    hidden_size = weights["ln.weight"].shape[0]
    config = Spa3VLMConfig(
        text_config=dict(hidden_size=hidden_size, num_attention_heads=1, num_key_value_heads=1, bos_token_id=None, eos_token_id=None),
        geometry_config=geometry_config,
        geometry_num_attention_heads=hidden_size // weights["geom_cross_attention.q_norm.weight"].shape[0],
        geometry_adaptor_ratio=hidden_size // weights["geometry_adaptor.0.weight"].shape[0],
    )
    fusion = Spa3VLMGeometryFusion(config).eval()
    state_dict = {}
    for key, tensor in weights.items():
        for pattern, target in OFFICIAL_KEY_MAPPING.items():
            if re.match(pattern, key):
                key = re.sub(pattern, target, key).removeprefix("model.geometry_fusion.")
                break
        state_dict[key] = tensor
    fusion.load_state_dict(state_dict, strict=True)
    return fusion


def check_fusion_stages(json_path, safetensors_path) -> dict[str, float]:
    """Fusion stages of a Spa3R set: `vlm_b0.*` (scene 0) and `vlm.*` when the set has one scene."""
    meta = json.loads(Path(json_path).read_text())
    t = load_file(str(safetensors_path))
    suggested = meta.get("determinism", {}).get("suggested_tolerance", {})
    tolerance = (suggested.get("atol", 2e-5), suggested.get("rtol", 1e-4))
    geometry_config = spa3r_config_from_reference(meta["config"])
    fusion = _fusion_from_official({k[4:]: v for k, v in t.items() if k.startswith("vlm.")}, geometry_config)
    spa3r = Spa3RModel(geometry_config).eval()
    converted, report = convert_spa3r_state_dict({k: v for k, v in t.items() if k.startswith("model.")}, spa3r)
    report.raise_if_failed()
    spa3r.load_state_dict(converted, strict=True)
    images = t["inputs.images"] if "inputs.images" in t else t["inputs.images_u8"].to(torch.float32) / 255
    image_embeds = t["inputs.image_embeds"][None]  # (1, N, C)

    stages = ["b0"] if "outputs.vlm_b0.latents" in t else []
    if images.shape[0] == 1:
        stages.append("")
    assert stages, "set has neither vlm_b0.* nor single-scene vlm.* tensors"
    max_diff = {}
    for stage in stages:
        prefix = f"outputs.vlm_{stage}." if stage else "outputs.vlm."
        with torch.no_grad():
            latents = spa3r(pixel_values=images[:1]).latents
            max_diff[prefix + "latents"] = assert_close(prefix + "latents", latents, t[prefix + "latents"], tolerance)
            recorded = t[prefix + "latents"]
            geometry = fusion.projector(recorded)
            cross = fusion.cross_attention(image_embeds, geometry)
            normed = fusion.norm(cross)
            ours = {
                "geo_embeds": geometry,
                "cross_attn_out": cross,
                "ln_out": normed[0],
                "adaptor_out": fusion.adaptor(normed)[0],
                "gate_out": torch.sigmoid(fusion.gate_proj(normed))[0],
                "fused_embeds": fusion(image_embeds, recorded)[0],
            }
            end_to_end = fusion(image_embeds, latents)[0]
        for name, tensor in ours.items():
            max_diff[prefix + name] = assert_close(prefix + name, tensor, t[prefix + name], tolerance)
        max_diff[prefix + "fused_embeds (our latents)"] = assert_close(
            prefix + "fused_embeds (our latents)", end_to_end, t[prefix + "fused_embeds"], tolerance
        )
    return max_diff
