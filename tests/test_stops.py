"""Stop sequences and incremental detokenization (``ar2diff.stops``)."""

from __future__ import annotations

from ar2diff.stops import StopWatch, cut_at_stops, find_stop, streamable, tail_window, token_pieces


def _bytes_decode(tokens: list[int]) -> str:
    """A byte-level tokenizer's decode: each token one byte."""
    return bytes(tokens).decode("utf-8", errors="replace")


class ByteTokenizer:
    def decode(self, tokens, skip_special_tokens=True):
        return _bytes_decode([t for t in tokens if t < 256])


def test_cut_and_find():
    assert cut_at_stops("ab. cd\n", [".", "\n"]) == "ab" and cut_at_stops("ab", ["x"]) == "ab"
    assert find_stop("xx END yy END", ["END", "yy"]) == 3 and find_stop("abc", []) is None


def test_streamable_holds_back_a_possible_start_and_never_shows_a_stop():
    assert streamable("hello wor", ["world"]) == "hello "
    assert streamable("hello world!", ["world"]) == "hello "
    assert streamable("ab\n", ["\n\n"]) == "ab" and streamable("abc", ["x"]) == "abc"
    text, stops = "one two three\n\nfour", ["\n\n", "thre3"]
    shown = [streamable(text[:i], stops) for i in range(len(text) + 1)]
    final = cut_at_stops(text, stops)
    assert all(final.startswith(s) for s in shown) and shown[-1] == final


def test_token_pieces_join_to_the_text_and_wait_for_whole_characters():
    text = "a🙂b é"
    tokens = list(text.encode())
    pieces = token_pieces(_bytes_decode, tokens)
    assert "".join(pieces) == text and len(pieces) == len(tokens)
    assert pieces[1:5] == ["", "", "", "🙂"]


def test_stop_watch_sees_multibyte_stops_and_each_row_on_its_own():
    stop = "𝔘𝔘𝔘"  # 3 characters, 12 bytes: 12 byte-level tokens
    assert tail_window([stop]) == 12 + 8
    text = ("x" * 30 + stop + "tail").encode()
    watch = StopWatch(ByteTokenizer(), [[stop], [], ["tail"]], end_ids=[999])
    ended = {}
    for t, byte in enumerate(text):
        for r in watch.ended([byte, byte, 999 if t == 5 else byte]):
            ended[r] = t
    assert ended == {0: 30 + 12 - 1}  # row 1 has no stops; row 2 ended at its end token first


def test_token_pieces_of_a_tokenizer_that_joins_words_with_spaces():
    words = {1: "a", 2: "", 3: "b", 4: "c"}  # 2: a special token, skipped when decoding

    def decode(tokens):
        return " ".join(words[t] for t in tokens if words[t])

    assert token_pieces(decode, [1, 2, 3, 4]) == ["a", "", " b", " c"]
