"""What a model load is doing, in the words of its progress line: torch-free, so front ends can name each stage.

Each stage is its English sentence (a `str`), which `on_stage` callbacks receive, the CLI logs and the window
translates by value (app/model/load_stages.py)."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    READING_CHECKPOINT = "Reading the checkpoint…"
    LOADING_TOWER = "Loading the vision tower…"
    LOADING_LANGUAGE = "Loading the language model…"
    LOADING_LANGUAGE_INT8 = "Loading the language model with 8-bit weights…"
    LOADING_LANGUAGE_INT4 = "Loading the language model with 4-bit weights…"
    LOADING_PROJECTOR = "Loading the projector…"  # the language model itself runs on another engine
    CONVERTING_FOR_LLAMA_CPP = "Converting the language model for llama.cpp (once)…"
    QUANTIZING_FOR_LLAMA_CPP_INT8 = "Quantizing the language model to Q8_0 for llama.cpp (once)…"
    QUANTIZING_FOR_LLAMA_CPP_INT4 = "Quantizing the language model to Q4_K_M for llama.cpp (once)…"
    LOADING_INTO_LLAMA_CPP = "Loading the language model into llama.cpp…"


LOADING_LANGUAGE_QUANTIZED = {"int8": Stage.LOADING_LANGUAGE_INT8, "int4": Stage.LOADING_LANGUAGE_INT4}
QUANTIZING_FOR_LLAMA_CPP = {"int8": Stage.QUANTIZING_FOR_LLAMA_CPP_INT8, "int4": Stage.QUANTIZING_FOR_LLAMA_CPP_INT4}
