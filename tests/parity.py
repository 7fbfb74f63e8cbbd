"""Reading reference sets (`<name>.json` + `<name>.safetensors`) produced by the authors' code.

A set's json describes every stored tensor; a tensor may be an exact sub-selection of the official one
(`stored_selection`, applied to ours before comparing). Tolerance: |ours − ref| ≤ atol + rtol·|ref|.
"""

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("SPA3R_PARITY_DIR", REPO.parent / "shared" / "parity"))


def reference_sets(prefix: str) -> list[str]:
    """Names of the sets in the parity directory whose files start with `prefix`."""
    return sorted(p.stem for p in PARITY_DIR.glob(f"{prefix}*.json") if (PARITY_DIR / f"{p.stem}.safetensors").exists())


class ReferenceSet:
    def __init__(self, name: str):
        self.name = name
        self.meta = json.loads((PARITY_DIR / f"{name}.json").read_text())
        self.tensors = load_file(str(PARITY_DIR / f"{name}.safetensors"))
        tolerance = self.meta.get("determinism", {}).get("suggested_tolerance", {})
        tolerance = tolerance.get("default", tolerance)
        self.atol = tolerance.get("atol", 2e-5)
        self.rtol = tolerance.get("rtol", 1e-4)
        self.compared: set[str] = set()

    @property
    def config(self) -> dict:
        return self.meta["config"]

    def weights(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def images(self) -> torch.Tensor:
        if "inputs.images" in self.tensors:
            return self.tensors["inputs.images"]
        return self.tensors["inputs.images_u8"].to(torch.float32) / 255  # divide, as the reference did

    def has(self, name: str) -> bool:
        return name in self.tensors

    def outputs(self, prefix: str) -> list[str]:
        return [k for k in self.tensors if k.startswith(prefix)]

    def select(self, name: str, full: torch.Tensor) -> torch.Tensor:
        """Apply the json's `stored_selection` of tensor `name` to our full tensor."""
        entry = self.meta["tensors"][name]
        if "full_shape" in entry and list(full.shape) != entry["full_shape"]:
            raise AssertionError(f"{self.name}:{name}: our shape {tuple(full.shape)} != official {entry['full_shape']}")
        for op in entry.get("stored_selection", []):
            if "index" in op:
                full = full.index_select(op["dim"], torch.tensor(op["index"], device=full.device))
            else:
                index = [slice(None)] * full.ndim
                index[op["dim"]] = slice(op.get("start"), op.get("stop"), op.get("step"))
                full = full[tuple(index)]
        return full

    def check(self, name: str, ours: torch.Tensor, atol: float | None = None, rtol: float | None = None) -> None:
        """Assert that our tensor matches reference `name` (exactly for bool/int tensors)."""
        reference = self.tensors[name]
        ours = self.select(name, ours.detach().cpu())
        assert ours.shape == reference.shape, f"{self.name}:{name}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
        if reference.dtype in (torch.bool, torch.int64, torch.int32, torch.uint8):
            assert torch.equal(ours.to(reference.dtype), reference), f"{self.name}:{name}: values differ"
        else:
            atol = self.atol if atol is None else atol
            rtol = self.rtol if rtol is None else rtol
            ours = ours.float()
            excess = (ours - reference).abs() - (atol + rtol * reference.abs())
            assert torch.isfinite(ours).all(), f"{self.name}:{name}: non-finite values"
            assert excess.max() <= 0, (
                f"{self.name}:{name}: max |diff| {(ours - reference).abs().max().item():.3g} exceeds "
                f"atol {atol} + rtol {rtol}·|ref|"
            )
        self.compared.add(name)
