"""The fm_multi model: encoders, shared backbone, heads."""
from fm_multi.model.kv_cache import KVCache
from fm_multi.model.multimodal import TASKS, FMMulti

__all__ = ["FMMulti", "KVCache", "TASKS"]
