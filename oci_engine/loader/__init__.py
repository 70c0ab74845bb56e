"""Checkpoint loading: Hugging Face directories (safetensors) and GGUF files, memory-mapped."""
from oci_engine.loader.checkpoint import Checkpoint, load_checkpoint
from oci_engine.loader.quant_tensor import QuantTensor

__all__ = ["Checkpoint", "QuantTensor", "load_checkpoint"]
