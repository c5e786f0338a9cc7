"""From sampled token ids to the text a client sees: incremental decoding and stop strings.

Engines that sample token by token (transformers, benchmark) share this; engines with a
generator of their own (ExLlamaV2) do the same inside their library.
"""

from __future__ import annotations

from typing import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    Decodes a short window of recent tokens twice (with and without the newest) and emits the
    difference, so that tokenizers which merge or drop spaces between tokens still produce the
    same text as decoding everything at once; holds back text while the newest tokens end in an
    incomplete UTF-8 character.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text):]


class StopStringMatcher:
    """Cuts the text at the first stop string; holds back any tail that could still become one."""

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string matched). Stop strings are never emitted."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        cut = min((pos for pos in (buffer.find(s) for s in self._stops) if pos != -1), default=-1)
        if cut != -1:
            self._held = ""
            return buffer[:cut], True
        keep = self._longest_partial_match(buffer)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[:len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_partial_match(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best


class TextStream:
    """Token ids in, client text out, for one choice: decoding plus stop strings."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str]):
        self._detokenizer = IncrementalDetokenizer(decode)
        self._stops = StopStringMatcher(stops)

    def push(self, token_id: int) -> tuple[str, bool]:
        return self._stops.feed(self._detokenizer.push(token_id))

    def finish(self) -> str:
        """The text still held back when the choice ends for a reason other than a stop string."""
        text, stopped = self._stops.feed(self._detokenizer.flush())
        return text if stopped else text + self._stops.flush()
