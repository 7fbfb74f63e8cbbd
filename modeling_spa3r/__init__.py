"""Spa3R and Spa3-VLM for transformers.

Importing the package registers the configurations and models with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoModel

from .configuration_spa3r import Spa3RConfig, VGGTConfig
from .modeling_spa3r import Spa3RForPretraining, Spa3RModel, Spa3RPreTrainedModel
from .modeling_vggt import VGGTModel

AutoConfig.register("vggt", VGGTConfig, exist_ok=True)
AutoConfig.register("spa3r", Spa3RConfig, exist_ok=True)
AutoModel.register(VGGTConfig, VGGTModel, exist_ok=True)
AutoModel.register(Spa3RConfig, Spa3RModel, exist_ok=True)
# saved configs get an `auto_map` (and the module files are copied) so Hub repos work with trust_remote_code=True
VGGTConfig.register_for_auto_class()
Spa3RConfig.register_for_auto_class()
VGGTModel.register_for_auto_class("AutoModel")
Spa3RModel.register_for_auto_class("AutoModel")

__all__ = [
    "Spa3RConfig",
    "Spa3RForPretraining",
    "Spa3RModel",
    "Spa3RPreTrainedModel",
    "VGGTConfig",
    "VGGTModel",
]

# ---------------------------------------------------------------------------------------------------------------------
# Spa3-VLM (Qwen2.5-VL + Spa3R): Auto classes in-process, and `auto_map` + copied module files for trust_remote_code.
# ---------------------------------------------------------------------------------------------------------------------
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from .configuration_spa3_vlm import Spa3VLMConfig  # noqa: E402
from .modeling_spa3_vlm import Spa3VLMForConditionalGeneration, Spa3VLMModel  # noqa: E402
from .processing_spa3_vlm import Spa3VLMProcessor  # noqa: E402

AutoConfig.register("spa3_vlm", Spa3VLMConfig, exist_ok=True)
AutoModel.register(Spa3VLMConfig, Spa3VLMModel, exist_ok=True)
AutoModelForImageTextToText.register(Spa3VLMConfig, Spa3VLMForConditionalGeneration, exist_ok=True)
AutoProcessor.register(Spa3VLMConfig, Spa3VLMProcessor, exist_ok=True)
Spa3VLMConfig.register_for_auto_class()
Spa3VLMForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
Spa3VLMProcessor.register_for_auto_class("AutoProcessor")

__all__ += ["Spa3VLMConfig", "Spa3VLMForConditionalGeneration", "Spa3VLMModel", "Spa3VLMProcessor"]
