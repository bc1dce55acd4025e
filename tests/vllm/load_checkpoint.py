"""Start vLLM on a checkpoint and print why it failed, or "loaded": run in a process of its own per checkpoint.

Usage: python load_checkpoint.py MODEL TOWER
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main(model: str, tower: str) -> None:
    from vllm import LLM

    try:
        LLM(model=model, hf_overrides={"mm_vision_tower": tower}, tokenizer_mode="xvlm", dtype="float32",
            enforce_eager=True, max_model_len=4096, kv_cache_memory_bytes=256 * 2**20)
    except Exception as exc:  # the test reads what a person would see: every message in the chain
        messages = []
        while exc is not None:
            messages.append(f"{type(exc).__name__}: {exc}")
            exc = exc.__cause__ or exc.__context__
        print("\n".join(messages))
        return
    print("loaded")


if __name__ == "__main__":
    main(*sys.argv[1:])
