"""Run by test_store_crash: save a chat, then stream an answer the way the app does until the test kills us."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from app.history.database import ChatStore
from app.history.records import AnswerStats

STREAM_SECONDS_BEFORE_MARKER = 2.5


def main(db_path: str, image: str) -> None:
    store = ChatStore(Path(db_path))
    chat_id = store.create_chat(model="tiny")
    store.add_user_message(chat_id, "What is in the picture?", [Path(image)])
    first = store.begin_answer(chat_id)
    store.finish_answer(first, "Some shapes.", "complete", AnswerStats(output_tokens=2))
    store.add_user_message(chat_id, "Count them slowly.")
    answer = store.begin_answer(chat_id)
    # From here on only update_streaming writes: no flush, no finish, as when the app is killed mid-answer.
    text, started, announced, number = "", time.monotonic(), False, 0
    while True:
        text += f"w{number} "
        number += 1
        store.update_streaming(answer, text)
        if not announced and time.monotonic() - started > STREAM_SECONDS_BEFORE_MARKER:
            print(f"STREAMING {chat_id} {answer}", flush=True)
            announced = True
        time.sleep(0.001)


if __name__ == "__main__":
    main(*sys.argv[1:])
