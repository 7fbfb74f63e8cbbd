"""Which attention implementations VGGT and Spa3R serve, and how a request is answered.

Every attention layer of VGGT / Spa3R (and the Spa3-VLM geometry fusion) calls
`torch.nn.functional.scaled_dot_product_attention`, the asymmetric view mask included (two SDPA calls on contiguous
slices). So:

- `sdpa` (the default) is what runs; on CUDA, SDPA itself dispatches to its FlashAttention / memory-efficient
  kernels for fp16/bf16 inputs, which is Spa3R's flash path;
- `flash_attention_2` / `flash_attention_3` (e.g. passed once for a whole Spa3-VLM) are answered with `sdpa` and a
  log line, so the language model can use the flash-attn package while Spa3R keeps SDPA;
- `eager` and other implementations are refused with a ValueError: there is no second attention code path, and
  silently running SDPA under another name would misreport what ran.
"""

from transformers.utils import logging

logger = logging.get_logger(__name__)

SUPPORTED_ATTENTION = ("sdpa",)


def resolve_sdpa_only_attention(model, requested: str | None) -> str:
    """
    The implementation a VGGT / Spa3R `model` runs for `requested` (see the module docstring); its VGGT backbone
    config (a plain sub-config, not a separate model) is set to the same.
    """
    resolved = _resolve(type(model).__name__, requested)
    backbone = getattr(model.config, "vggt_config", None)
    if backbone is not None:
        backbone._attn_implementation_internal = resolved
    return resolved


def _resolve(model_name: str, requested: str | None) -> str:
    if requested in (None, "sdpa"):
        return "sdpa"
    if "flash" in requested:
        logger.warning_once(
            f"{model_name} runs attention through torch SDPA (its own FlashAttention kernel on CUDA in fp16/bf16); "
            f"attn_implementation={requested!r} is served by 'sdpa'"
        )
        return "sdpa"
    raise ValueError(
        f"{model_name} supports attn_implementation {list(SUPPORTED_ATTENTION)} (flash_attention_* requests are "
        f"served by SDPA), not {requested!r}: all its attention layers call torch SDPA. For a Spa3-VLM, pass a dict "
        "such as {'text_config': 'eager', 'vision_config': 'eager', 'geometry_config': 'sdpa'}."
    )


def geometry_attention_for(requested) -> str | None:
    """What the Spa3R encoder of a Spa3-VLM runs when one string is requested for the whole model."""
    return None if requested is None else "sdpa"
