"""The float reference model (HGRNBit), loading and saving Hugging Face format folders."""

from .config import HGRNBitConfig, ConfigError
from .modeling import HGRNBitForCausalLM, CausalLMOutput, sample_logits
from .io import CheckpointError, load_state_dict

__all__ = ["HGRNBitConfig", "HGRNBitForCausalLM", "CausalLMOutput", "ConfigError", "CheckpointError",
           "load_state_dict", "sample_logits"]
