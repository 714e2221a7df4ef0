"""fm_multi: one shared Transformer backbone for chat, summarization, image classification,
object detection and speech-to-text."""
from fm_multi.config import ModelConfig, preset
from fm_multi.model import FMMulti
from fm_multi.pipeline import InputError, Limits, Pipeline

__version__ = "0.1.0"
__all__ = ["FMMulti", "InputError", "Limits", "ModelConfig", "Pipeline", "preset"]
