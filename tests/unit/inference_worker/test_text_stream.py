"""From token ids to client text: incremental decoding (real tokenizer) and stop strings."""

from __future__ import annotations

import random

import pytest

from inference_worker.text_stream import REPLACEMENT_CHAR, IncrementalDetokenizer, StopStringMatcher, TextStream

TEXTS = [
    "Hello, world!",
    " leading  double  spaces\n\ttabs and\nnewlines ",
    "Café, naïve, Ünïcödé, Ça va? Très bien — merci!",
    "Emoji: 👋🏽 🇫🇷 👩‍👩‍👧‍👦 done.",
    "日本語のテキストと中文文本。",
    "Math: ∑ x² ≤ ∞; arrows → ⇒",
    "12345678901234567890 and code: `def f(x): return x**2`",
]


def stream_deltas(decode, ids: list[int]) -> list[str]:
    detokenizer = IncrementalDetokenizer(decode)
    deltas = [detokenizer.push(token) for token in ids]
    return deltas + [detokenizer.flush()]


# --- IncrementalDetokenizer ---------------------------------------------------------------------

@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_decoding_everything_at_once(chat_tokenizer, text):
    ids = chat_tokenizer.encode(text)
    assert "".join(stream_deltas(chat_tokenizer.decode, ids)) == chat_tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS)
def test_no_delta_holds_a_broken_character(chat_tokenizer, text):
    ids = chat_tokenizer.encode(text)
    assert not any(REPLACEMENT_CHAR in delta for delta in stream_deltas(chat_tokenizer.decode, ids))


def test_emoji_split_over_tokens_comes_out_whole(chat_tokenizer):
    ids = chat_tokenizer.encode("👋")
    assert len(ids) > 1, "the emoji spans several byte-level tokens"
    assert chat_tokenizer.decode(ids[:1]).endswith(REPLACEMENT_CHAR)
    deltas = stream_deltas(chat_tokenizer.decode, ids)
    assert deltas[:-2] == [""] * (len(ids) - 1)
    assert deltas[-2:] == ["👋", ""]


def test_word_tokens_come_out_as_they_arrive(chat_tokenizer):
    ids = chat_tokenizer.encode("Hello world, how are you")
    deltas = stream_deltas(chat_tokenizer.decode, ids)
    assert all(deltas[:-1]), "every complete token yields text at once"
    assert deltas[-1] == ""


def test_flush_releases_an_incomplete_character_at_the_end(chat_tokenizer):
    ids = chat_tokenizer.encode("ok 👋")[:-1]  # generation stopped in the middle of the emoji
    deltas = stream_deltas(chat_tokenizer.decode, ids)
    assert "".join(deltas[:-1]) == "ok"
    assert deltas[-1].endswith(REPLACEMENT_CHAR)
    assert "".join(deltas) == chat_tokenizer.decode(ids)


def test_special_tokens_add_no_text(chat_tokenizer):
    end = chat_tokenizer.eos_token_id
    ids = chat_tokenizer.encode("Hi") + [end] + chat_tokenizer.encode(" there")
    deltas = stream_deltas(chat_tokenizer.decode, ids)
    assert "".join(deltas) == "Hi there"


def test_random_token_sequences_decode_the_same_incrementally(chat_tokenizer):
    # Arbitrary ids, half of them among the low (single-byte) ids: broken and merged characters galore.
    rng = random.Random(1)
    for _ in range(300):
        ids = [rng.randrange(chat_tokenizer.vocab_size) if rng.random() < 0.5 else rng.randrange(300)
               for _ in range(rng.randint(1, 20))]
        assert "".join(stream_deltas(chat_tokenizer.decode, ids)) == chat_tokenizer.decode(ids), ids


def test_flush_twice_adds_nothing(chat_tokenizer):
    detokenizer = IncrementalDetokenizer(chat_tokenizer.decode)
    for token in chat_tokenizer.encode("abc 👋")[:-1]:
        detokenizer.push(token)
    assert detokenizer.flush()
    assert detokenizer.flush() == ""


# --- StopStringMatcher --------------------------------------------------------------------------

def feed_all(matcher: StopStringMatcher, pieces: list[str]) -> tuple[str, bool]:
    """Feed pieces until a stop matches; the emitted text and whether it stopped."""
    emitted = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        emitted.append(text)
        if stopped:
            return "".join(emitted), True
    return "".join(emitted) + matcher.flush(), False


def test_no_stop_strings_pass_text_through():
    matcher = StopStringMatcher([])
    assert matcher.feed("END of it") == ("END of it", False)


def test_empty_stop_strings_are_ignored():
    assert StopStringMatcher(["", ""]).feed("anything") == ("anything", False)


def test_stop_inside_one_piece_cuts_before_it():
    assert StopStringMatcher(["END"]).feed("the END is near") == ("the ", True)


def test_stop_at_the_very_start_emits_nothing():
    assert StopStringMatcher(["END"]).feed("END") == ("", True)


@pytest.mark.parametrize("pieces", [
    ["Hello E", "ND world"],
    ["Hello ", "E", "N", "D", " world"],
    ["Hello EN", "D"],
    ["Hello", " ", "END"],
])
def test_stop_split_across_pieces_is_found(pieces):
    assert feed_all(StopStringMatcher(["END"]), pieces) == ("Hello ", True)


def test_possible_stop_prefix_is_held_back():
    matcher = StopStringMatcher(["END"])
    assert matcher.feed("Hello EN") == ("Hello ", False)


def test_held_text_that_is_not_a_stop_is_released():
    matcher = StopStringMatcher(["END"])
    assert matcher.feed("Hello EN") == ("Hello ", False)
    assert matcher.feed("ough") == ("ENough", False)


def test_flush_returns_the_held_tail():
    matcher = StopStringMatcher(["END"])
    matcher.feed("The E")
    assert matcher.flush() == "E"
    assert matcher.flush() == ""


def test_earliest_stop_in_the_text_wins_not_the_first_listed():
    assert StopStringMatcher(["world", "lo"]).feed("hello world") == ("hel", True)


def test_earliest_of_several_stops_across_pieces():
    assert feed_all(StopStringMatcher(["fox", "quick"]), ["the qu", "ick brown fox"]) == ("the ", True)


def test_overlapping_partial_match_still_finds_the_stop():
    assert feed_all(StopStringMatcher(["aab"]), ["xa", "a", "ab"]) == ("xa", True)


def test_partial_of_one_stop_completing_another():
    assert feed_all(StopStringMatcher(["abc", "bd"]), ["ab", "d"]) == ("a", True)


@pytest.mark.parametrize("pieces", [["a", "b", "c"], ["Hello E", "N", "D", "ING"], ["\n", "\n"]])
def test_text_without_a_stop_comes_out_whole(pieces):
    assert feed_all(StopStringMatcher(["ENDS", "\n\n\n"]), pieces) == ("".join(pieces), False)


def reference_cut(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    """Generation ends with the first piece after which the text holds a stop; cut at the earliest one."""
    text = ""
    for piece in pieces:
        text += piece
        found = [text.find(stop) for stop in stops if stop in text]
        if found:
            return text[:min(found)], True
    return text, False


def test_random_texts_split_at_random_match_the_reference():
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        stops = ["".join(rng.choice("abc") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        cuts = sorted(rng.sample(range(len(text) + 1), rng.randint(0, len(text))))
        pieces = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
        assert feed_all(StopStringMatcher(stops), pieces) == reference_cut(pieces, stops), (pieces, stops)


def test_multibyte_stop_string():
    assert feed_all(StopStringMatcher(["👋"]), ["hi ", "👋 there"]) == ("hi ", True)


# --- TextStream ---------------------------------------------------------------------------------

def text_stream(chat_tokenizer, stops):
    return TextStream(chat_tokenizer.decode, stops)


def test_text_stream_applies_stop_strings_to_decoded_text(chat_tokenizer):
    stream = text_stream(chat_tokenizer, ["Paris"])
    emitted = []
    for token in chat_tokenizer.encode("The capital is Paris, of course."):
        text, stopped = stream.push(token)
        emitted.append(text)
        if stopped:
            break
    assert stopped
    assert "".join(emitted) == "The capital is "


def test_finish_releases_a_held_partial_stop(chat_tokenizer):
    stream = text_stream(chat_tokenizer, ["ENDING"])
    emitted = [stream.push(token)[0] for token in chat_tokenizer.encode("The END")]
    assert "".join(emitted) == "The "
    assert stream.finish() == "END"


def test_finish_releases_an_incomplete_character(chat_tokenizer):
    stream = text_stream(chat_tokenizer, [])
    ids = chat_tokenizer.encode("ok 👋")[:-1]
    emitted = "".join(stream.push(token)[0] for token in ids)
    assert emitted + stream.finish() == chat_tokenizer.decode(ids)


def test_finish_with_nothing_held_is_empty(chat_tokenizer):
    stream = text_stream(chat_tokenizer, ["STOP"])
    emitted = "".join(stream.push(token)[0] for token in chat_tokenizer.encode("plain text"))
    assert emitted == "plain text"
    assert stream.finish() == ""


def test_finish_never_emits_a_stop_completed_by_the_flushed_text():
    # A byte-level decoder: token 2 is the first half of "é"; a stop string ends with what the
    # held-back half decodes to, so the stop only completes when finish() flushes it.
    pieces = {0: b"ab", 1: b"c", 2: "é".encode()[:1]}
    decode = lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")  # noqa: E731
    stream = TextStream(decode, ["c" + REPLACEMENT_CHAR])
    assert stream.push(0) == ("ab", False)
    assert stream.push(1) == ("", False)  # "c" could begin the stop
    assert stream.push(2) == ("", False)  # incomplete character held by the detokenizer
    assert stream.finish() == ""
