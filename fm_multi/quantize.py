"""Optional dynamic int8 quantization of a model's Linear layers, for CPU inference.

Weights are stored as int8 with one scale per tensor; activations are quantized on the fly per
batch (Jacob et al., 2018, "dynamic" because activation scales are not calibrated ahead of time).
Only nn.Linear modules change: the tied LM head reuses the fp32 token embedding, and LayerNorm,
softmax and the convolutions of the audio stem stay fp32. CPU only; the quantized kernels have no
GPU implementation.

    from fm_multi.quantize import quantize_int8
    pipe.model = quantize_int8(pipe.model)

`fm-multi bench --only quantize` measures the speed-up and how often the int8 model agrees with fp32.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` (left untouched) with every nn.Linear dynamically quantized to int8."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("dynamic int8 quantization runs on the CPU only; move the model to the CPU first")
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the API still works in the pinned torch.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear},
                                                           dtype=torch.qint8)
    return quantized
