"""Reading an OpenAI `ImagesResponse` as it arrives: each `b64_json` string is decoded
into its own sink (a temp file in the file store) while the rest of the JSON, a few
hundred bytes, is kept and parsed at the end. Memory per answer stays one network chunk
however large the images are.

The scanner knows just enough JSON to find strings (and their escapes) and to tell a key
from a value; everything else is left to `json.loads` on what is kept. In place of each
image's base64 the kept text has `"<n>"`, the number of its sink.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any, Protocol

FIELD = b"b64_json"
_WHITESPACE = b" \t\r\n"
# Escapes a JSON string of base64 may hold: "\/" is "/", and line breaks (MIME-style
# base64) carry nothing. Anything else is not base64.
_B64_ESCAPES = {ord("/"): b"/", ord("n"): b"", ord("r"): b""}
_MAX_KEPT = 1 << 20  # past this much non-image JSON, the answer is not what we expect


def _quote_or_escape(chunk: bytes, pos: int) -> int:
    """Where the next `"` or `\\` is at or after `pos` (-1: none). Two memchr scans: a
    regex would be ten times slower over megabytes of base64."""
    quote = chunk.find(b'"', pos)
    escape = chunk.find(b"\\", pos, len(chunk) if quote < 0 else quote)
    return escape if escape >= 0 else quote


class ImageSink(Protocol):
    """Where an image's decoded bytes go."""

    def write(self, data: bytes) -> None: ...


class MalformedAnswer(ValueError):
    """The answer is not the JSON expected (cut short, not JSON, too much of it)."""


class InvalidBase64(ValueError):
    """An image's base64 is not valid."""


class Base64Writer:
    """Decodes base64 text that arrives in pieces of any length into `sink`."""

    def __init__(self, sink: ImageSink) -> None:
        self.sink = sink
        self._rest = b""  # fewer than 4 characters waiting for the next piece
        self.ended = False  # padding seen: nothing may follow
        self.empty = True  # nothing came (an empty string: no image)

    def feed(self, text: bytes) -> None:
        if not text:
            return
        if self.ended:
            raise InvalidBase64("data after the padding")
        self.empty = False
        text = self._rest + text
        cut = len(text) - len(text) % 4
        self._rest = text[cut:]
        if cut:
            block = text[:cut]
            try:
                self.sink.write(binascii.a2b_base64(block, strict_mode=True))
            except binascii.Error as exc:
                raise InvalidBase64(str(exc)) from None
            self.ended = block.endswith(b"=")

    def close(self) -> None:
        if self._rest:
            raise InvalidBase64("its length is not a multiple of 4")


class AnswerScanner:
    """Feed it the answer's bytes as they come; `close()` gives the parsed JSON with each
    `b64_json` value replaced by the number of the sink (from `new_sink`) it went to."""

    def __init__(self, new_sink: Callable[[], ImageSink]) -> None:
        self.new_sink = new_sink
        self.writers: list[Base64Writer] = []
        self.errors: dict[int, str] = {}  # sink number → why its base64 was refused
        self._kept = bytearray()
        self._state = self._outside
        self._string_start = 0  # where the current string starts in `_kept`
        self._escape = False  # a backslash ended the last piece

    def feed(self, chunk: bytes) -> None:
        pos = 0
        while pos < len(chunk):
            pos = self._state(chunk, pos)
        if len(self._kept) > _MAX_KEPT:
            raise MalformedAnswer("too much JSON besides the images")

    def close(self) -> Any:
        if self._state != self._outside:
            raise MalformedAnswer("the answer ended inside a string")
        for number, writer in enumerate(self.writers):
            if number not in self.errors:
                try:
                    writer.close()
                except InvalidBase64 as exc:
                    self.errors[number] = str(exc)
        try:
            return json.loads(self._kept)
        except ValueError as exc:
            raise MalformedAnswer(f"not JSON: {exc}") from None

    # Each state reads from `chunk` at `pos` and returns where it stopped.

    def _outside(self, chunk: bytes, pos: int) -> int:
        quote = chunk.find(b'"', pos)
        end = len(chunk) if quote < 0 else quote + 1
        self._kept += chunk[pos:end]
        if quote >= 0:
            self._string_start = len(self._kept) - 1
            self._state = self._in_string
        return end

    def _in_string(self, chunk: bytes, pos: int) -> int:
        if self._escape:  # the escaped character, whatever it is
            self._kept += chunk[pos : pos + 1]
            self._escape = False
            return pos + 1
        found = _quote_or_escape(chunk, pos)
        if found < 0:
            self._kept += chunk[pos:]
            return len(chunk)
        end = found + 1
        self._kept += chunk[pos:end]
        if chunk[found] == 0x5C:  # a backslash
            self._escape = True
            return end
        self._state = self._outside
        if self._kept[self._string_start :] == b'"' + FIELD + b'"':
            self._state = self._before_colon
        return end

    def _before_colon(self, chunk: bytes, pos: int) -> int:
        return self._skip_to(chunk, pos, b":", self._before_value)

    def _before_value(self, chunk: bytes, pos: int) -> int:
        return self._skip_to(chunk, pos, b'"', self._in_base64)

    def _skip_to(self, chunk: bytes, pos: int, wanted: bytes, then: Any) -> int:
        """Whitespace, then `wanted` (the key's colon, the value's quote): on to `then`.
        Anything else (a `null` value, or the name as a value) is ordinary JSON."""
        while pos < len(chunk) and chunk[pos] in _WHITESPACE:
            self._kept.append(chunk[pos])
            pos += 1
        if pos == len(chunk):
            return pos
        if chunk[pos : pos + 1] != wanted:
            self._state = self._outside
            return pos
        if then == self._in_base64:
            self._kept += b'"%d"' % len(self.writers)
            self.writers.append(Base64Writer(self.new_sink()))
        else:
            self._kept += wanted
        self._state = then
        return pos + 1

    def _in_base64(self, chunk: bytes, pos: int) -> int:
        writer = self.writers[-1]
        number = len(self.writers) - 1
        if self._escape:
            self._escape = False
            replacement = _B64_ESCAPES.get(chunk[pos])
            if replacement is None:
                self.errors.setdefault(number, "an escape that is not base64")
            else:
                self._feed(writer, number, replacement)
            return pos + 1
        found = _quote_or_escape(chunk, pos)
        end = len(chunk) if found < 0 else found
        self._feed(writer, number, chunk[pos:end])
        if found < 0:
            return end
        if chunk[found] == 0x5C:  # a backslash
            self._escape = True
        else:
            self._state = self._outside
        return end + 1

    def _feed(self, writer: Base64Writer, number: int, text: bytes) -> None:
        if number in self.errors:
            return  # refused already: the rest of it is skipped
        try:
            writer.feed(text)
        except InvalidBase64 as exc:
            self.errors[number] = str(exc)
