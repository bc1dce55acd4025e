"""A model load's progress line in the window's language: the core's stages (xvlm_core/stages.py) by value."""

from __future__ import annotations

from PySide6.QtCore import QT_TRANSLATE_NOOP
from xvlm_core.stages import Stage

from app.i18n import translate

_WORDS = {
    Stage.READING_CHECKPOINT: QT_TRANSLATE_NOOP("LoadStage", "Reading the checkpoint…"),
    Stage.LOADING_TOWER: QT_TRANSLATE_NOOP("LoadStage", "Loading the vision tower…"),
    Stage.LOADING_LANGUAGE: QT_TRANSLATE_NOOP("LoadStage", "Loading the language model…"),
    Stage.LOADING_LANGUAGE_INT8: QT_TRANSLATE_NOOP("LoadStage", "Loading the language model with 8-bit weights…"),
    Stage.LOADING_LANGUAGE_INT4: QT_TRANSLATE_NOOP("LoadStage", "Loading the language model with 4-bit weights…"),
    Stage.LOADING_PROJECTOR: QT_TRANSLATE_NOOP("LoadStage", "Loading the projector…"),
    Stage.CONVERTING_FOR_LLAMA_CPP: QT_TRANSLATE_NOOP("LoadStage", "Converting the language model for llama.cpp "
                                                                   "(once)…"),
    Stage.QUANTIZING_FOR_LLAMA_CPP_INT8: QT_TRANSLATE_NOOP("LoadStage", "Quantizing the language model to 8 bits "
                                                                        "for llama.cpp (once)…"),
    Stage.QUANTIZING_FOR_LLAMA_CPP_INT4: QT_TRANSLATE_NOOP("LoadStage", "Quantizing the language model to 4 bits "
                                                                        "for llama.cpp (once)…"),
    Stage.LOADING_INTO_LLAMA_CPP: QT_TRANSLATE_NOOP("LoadStage", "Loading the language model into llama.cpp…"),
}


def stage_text(stage: str) -> str:
    """`stage` translated where it is one of the core's; anything else (a remote model's, already translated)
    as it is."""
    words = _WORDS.get(stage)  # a StrEnum member is found by its text
    return translate("LoadStage", words) if words else stage
