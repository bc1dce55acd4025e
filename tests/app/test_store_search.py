"""Search across chats: any text a person types is a valid query, in any language, and the index stays in step."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.history.database import ChatStore
from app.history.records import SearchHit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChatStore]:
    with ChatStore(tmp_path / "chats.sqlite3", stream_write_interval=0) as opened:
        yield opened


def chat_with(store: ChatStore, *texts: str) -> list[int]:
    """A chat of alternating questions and answers; their message ids."""
    chat_id = store.create_chat()
    ids = []
    for number, text in enumerate(texts):
        if number % 2 == 0:
            ids.append(store.add_user_message(chat_id, text))
        else:
            ids.append(store.begin_answer(chat_id))
            store.finish_answer(ids[-1], text)
    return ids


def highlighted(hit: SearchHit) -> list[str]:
    return [hit.snippet[start:end] for start, end in hit.highlights]


def fts_is_consistent(store: ChatStore) -> bool:
    db = sqlite3.connect(store.path)
    try:
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()
    return True


def test_finds_messages_in_every_chat_with_the_match_highlighted(store: ChatStore) -> None:
    first = chat_with(store, "Is there a bicycle in the picture?", "Yes, a red Bicycle leans on the wall.")
    second = chat_with(store, "What about this one?", "No bicycles here, only cars.")
    chat_with(store, "Describe the sky.", "Blue with clouds.")

    hits = store.search("bicycle")
    assert [(hit.chat_id, hit.message_id) for hit in hits] == [
        (store.load_chat(2).id, second[1]),  # newest first
        (store.load_chat(1).id, first[1]),
        (store.load_chat(1).id, first[0]),
    ]
    assert [hit.role for hit in hits] == ["assistant", "assistant", "user"]
    assert hits[1].chat_title == "Is there a bicycle in the picture?"
    assert hits[1].snippet == "Yes, a red Bicycle leans on the wall."
    assert highlighted(hits[1]) == ["Bicycle"]
    assert hits[1].snippet_html() == "Yes, a red <b>Bicycle</b> leans on the wall."


def test_every_word_must_match_and_quotes_make_a_phrase(store: ChatStore) -> None:
    ids = chat_with(store, "a red car and a blue bus", "the car is red", "red paint on a blue car")
    assert {hit.message_id for hit in store.search("red car")} == set(ids)
    assert {hit.message_id for hit in store.search("red bus")} == {ids[0]}
    assert {hit.message_id for hit in store.search('"red car"')} == {ids[0]}
    assert {hit.message_id for hit in store.search('"car is"   red')} == {ids[1]}
    assert store.search("red train") == []


def test_chinese_and_other_scripts_are_found_by_any_part(store: ChatStore) -> None:
    ids = chat_with(store, "这张图片里有一只小猫吗？", "有，一只白色的小猫在沙发上。", "Die Schüler der ÉCOLE lesen.")
    assert {hit.message_id for hit in store.search("猫")} == {ids[0], ids[1]}  # one character
    assert {hit.message_id for hit in store.search("图片")} == {ids[0]}  # two
    assert {hit.message_id for hit in store.search("白色的小猫")} == {ids[1]}  # longer
    assert highlighted(store.search("沙发")[0]) == ["沙发"]
    assert {hit.message_id for hit in store.search("école")} == {ids[2]}  # case folded beyond ASCII
    assert {hit.message_id for hit in store.search("schüler")} == {ids[2]}


@pytest.mark.parametrize(
    "query",
    ['"', '""', '"""', "AND", "OR", "NOT", "NEAR", "NEAR(a b)", "a AND", "AND OR NOT", "*", "a*", "*a", "^start",
     "-minus", "+plus", "(", ")", "())", "text:word", "messages_fts:x", "{col}", "[x]", "'", "''", "\\", "%", "_",
     "%%", "a_b", "\x00", "nul\x00byte", "\ud800lone", "🙂", "🙂🙂🙂", "e\u0301", "   ", "", "\t\n",
     ";DROP TABLE chats;", "x" * 5000, " ".join(["word"] * 500), 'he said "hi', "1e5", "0x1F", "NULL"],
)
def test_any_query_is_safe(store: ChatStore, query: str) -> None:
    chat_with(store, "Some ordinary text about rock AND roll, 100% of it.", "Plain answer.")
    assert isinstance(store.search(query), list)
    assert store.list_chats()  # and nothing was harmed


def test_random_queries_never_raise(store: ChatStore) -> None:
    chat_with(store, 'quotes " and stars * and (brackets) AND NOT', "猫 and 100% _underscores_ \\ back")
    alphabet = [*'"*()^:-+{}[]\'\\%_ ANDORNEAR猫ab \t\n\x00😀é', "AND", "OR", "NOT", "NEAR"]
    generator = random.Random(20261126)
    for _ in range(500):
        query = "".join(generator.choice(alphabet) for _ in range(generator.randint(1, 12)))
        store.search(query)


def test_special_characters_are_matched_literally(store: ChatStore) -> None:
    ids = chat_with(store, "rock AND roll", 'she said "yes"', "100% sure", "a_b and a*b", "plain words only")
    assert [hit.message_id for hit in store.search("AND")] == [ids[3], ids[0]]  # the word, any case
    assert [hit.message_id for hit in store.search('"')] == [ids[1]]
    assert [hit.message_id for hit in store.search("%")] == [ids[2]]  # not a wildcard for everything
    assert [hit.message_id for hit in store.search("a_b")] == [ids[3]]
    assert [hit.message_id for hit in store.search("*")] == [ids[3]]
    assert [hit.message_id for hit in store.search("a*b")] == [ids[3]]
    assert [hit.message_id for hit in store.search("_")] == [ids[3]]


def test_snippet_of_a_long_message_is_one_line_around_the_match(store: ChatStore) -> None:
    text = "Lorem ipsum dolor sit amet. " * 20 + "\nThe <giraffe> & its calf\n" + "Sed do eiusmod. " * 20
    chat_with(store, text)
    (hit,) = store.search("giraffe")
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert "\n" not in hit.snippet and len(hit.snippet) <= 170
    assert highlighted(hit) == ["giraffe"]
    assert "<b>giraffe</b>&gt; &amp; its calf" in hit.snippet_html()
    assert "&lt;<b>giraffe" in hit.snippet_html()


def test_index_follows_streaming_truncation_and_purge(store: ChatStore) -> None:
    question, answer = chat_with(store, "about a walrus", "A walrus is large.")
    chat_id = store.load_chat(1).id
    assert {hit.message_id for hit in store.search("walrus")} == {question, answer}

    streaming = store.begin_answer(chat_id)
    store.update_streaming(streaming, "The narwhal")
    assert [hit.message_id for hit in store.search("narwhal")] == [streaming]
    store.finish_answer(streaming, "The narwhal has a tusk.")
    assert [hit.message_id for hit in store.search("tusk")] == [streaming]

    store.truncate_after(question)
    assert store.search("narwhal") == [] and store.search("large") == []
    assert [hit.message_id for hit in store.search("walrus")] == [question]
    store.delete_chat(chat_id)
    store.purge_deleted()
    assert store.search("walrus") == []
    assert fts_is_consistent(store)


def test_limit(store: ChatStore) -> None:
    chat_with(store, *[f"note number {n}" for n in range(30)])
    assert len(store.search("note", limit=5)) == 5
    assert len(store.search("note")) == 30
    assert store.search("note", limit=0) == []


def test_an_answer_s_other_versions_are_found_and_say_which_version(store: ChatStore) -> None:
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "Name a colour")
    answer = store.begin_answer(chat_id)
    store.finish_answer(answer, "Vermilion red.", "complete")
    store.begin_version(answer)
    store.finish_answer(answer, "Teal.", "complete")

    (hit,) = store.search("vermilion")
    assert (hit.message_id, hit.version, highlighted(hit)) == (answer, 0, ["Vermilion"])
    (hit,) = store.search("teal")
    assert hit.version is None  # the version shown is the message's own text
    store.show_version(answer, 0)
    (hit,) = store.search("teal")
    assert (hit.message_id, hit.version) == (answer, 1)
