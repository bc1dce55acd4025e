"""Greedy answers of `xvlm_core` itself, run by the app's own environment (.venv) for the vLLM tests to compare with.

Usage: python xvlm_reference.py MODEL TOWER CONVERSATIONS.json MAX_TOKENS: prints, per conversation, the input ids
(-200 for each image), the output ids and the answer's text as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.messages import Message
from xvlm_core.sampling import SamplingSettings


def main(model: str, tower: str, conversations: str, max_tokens: str) -> None:
    loaded = load_model(model, vision_tower=tower, device="cpu", dtype="float32")
    results = []
    for conversation in json.loads(Path(conversations).read_text(encoding="utf-8")):
        messages = [Message(m["role"], m["content"], tuple(m.get("images", ()))) for m in conversation["messages"]]
        answer = ChatSession(loaded).answer(
            messages, SamplingSettings(max_new_tokens=int(max_tokens)), **({"system": conversation["system"]}
                                                                         if "system" in conversation else {})
        )
        for _ in answer:
            pass
        result = answer.result
        results.append({"input_ids": result.input_ids, "output_ids": result.output_ids, "text": result.text})
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
