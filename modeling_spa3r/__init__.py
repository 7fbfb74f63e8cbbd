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

__all__ = [
    "Spa3RConfig",
    "Spa3RForPretraining",
    "Spa3RModel",
    "Spa3RPreTrainedModel",
    "VGGTConfig",
    "VGGTModel",
]
