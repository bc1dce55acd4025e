"""The weight precisions a model can load in, torch-free so argument parsers and the app can name them."""

from __future__ import annotations

QUANTIZE_CHOICES = ("none", "int8", "int4")

# How each quantized precision is named where a loaded model is described ("none" is not named: it is the default).
WEIGHTS_LABELS = {"int8": "8-bit weights", "int4": "4-bit weights"}

# What runs the language model: PyTorch (the reference, every device) or llama.cpp (the CPU, faster decode);
# "auto" picks llama.cpp where it runs and is installed, PyTorch elsewhere (xvlm_core.engines.choice).
ENGINE_CHOICES = ("auto", "pytorch", "llama.cpp")
