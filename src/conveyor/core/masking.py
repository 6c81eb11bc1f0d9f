"""Masking secrets in text a tool printed: the value, and the forms a tool would print it in.

A literal replace catches ``echo $TOKEN`` and nothing else. Tools re-encode what they handle:
HTTP clients base64 credentials (Basic auth), debuggers hex-dump, URLs percent-encode, JSON
loggers escape quotes and non-ASCII, and wrapping tools break long values across lines. So
each secret is masked as every one of these *forms*:

- the value itself, and each non-blank line of a multi-line value (a PEM key);
- base64, standard and URL-safe alphabets, with and without ``=`` padding, of the value and
  of the value followed by a newline (``echo "$TOKEN" | base64``);
- the part of the base64 text that depends only on the value when it is encoded inside
  something longer (``user:password`` in a Basic auth header), at each of the three byte
  alignments;
- hexadecimal, lower and upper case;
- percent-encoded (``quote`` with and without ``/`` kept, and ``quote_plus``);
- JSON-escaped (``json.dumps`` with and without ``ensure_ascii``), without the quotes;
- reversed;
- any of the above broken across lines: a line break (``\\n`` or ``\\r\\n``) may sit between
  any two characters.

Not covered, on purpose or because it cannot be: other transforms (base32, compression,
encryption, hashes, case changes other than hex, a value cut into pieces with other text
between them, a prefix or a part of a value), and values shorter than ``MIN_ENCODED``
characters, which are masked only literally (their encodings are too short to mask without
also masking ordinary text). ``docs/pipelines.md`` repeats this list for users.

``StreamMasker`` masks a byte stream whose chunks may cut a form anywhere: it holds back
the last few bytes that could still be the start of a form until more data (or the end)
shows whether it is one. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_ENCODED = 4
"""Values shorter than this are masked literally only."""
MIN_CORE = 8
"""Shortest base64 'inside something longer' fragment worth masking."""

_BREAK = r"(?:\r?\n)?"
_URLSAFE = str.maketrans("+/", "-_")


def forms(value: str) -> set[str]:
    """Every spelling of ``value`` that ``Masker`` masks (see the module docstring)."""
    found = {value}
    found.update(line for line in value.splitlines() if line.strip())
    if len(value) >= MIN_ENCODED:
        raw = value.encode()
        for data in (raw, raw + b"\n"):
            encoded = base64.b64encode(data).decode()
            for text in (encoded, encoded.translate(_URLSAFE)):
                found.update((text, text.rstrip("=")))
        for offset in (0, 1, 2):
            # Inside a longer text the characters covering the value's first and last few
            # bytes also depend on its neighbours; the middle depends on the value alone.
            encoded = base64.b64encode(b"\0" * offset + raw).decode()
            core = encoded[4 if offset else 0 : (offset + len(raw)) // 3 * 4]
            if len(core) >= MIN_CORE:
                found.update((core, core.translate(_URLSAFE)))
        found.update((raw.hex(), raw.hex().upper()))
        found.update((quote(value, safe=""), quote(value), quote_plus(value)))
        found.update((json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]))
        found.add(value[::-1])
    return {form for form in found if form}


def _pattern(pieces: list[str]) -> str:
    return _BREAK.join(re.escape(piece) for piece in pieces)


class Masker:
    """Replaces every form of every secret value with ``***``, in text or in bytes."""

    def __init__(self, values: Iterable[str]) -> None:
        every: set[str] = set()
        for value in values:
            if value:
                every |= forms(value)
        # Longest first, so a form that contains another is masked whole.
        ordered = sorted(every, key=lambda f: (-len(f), f))
        self._forms = tuple(ordered)
        self._text = re.compile("|".join(_pattern(list(f)) for f in ordered)) if ordered else None
        encoded = [f.encode() for f in ordered]
        self._bytes = (
            re.compile(b"|".join(_pattern([chr(b) for b in f]).encode("latin-1") for f in encoded))
            if encoded
            else None
        )
        longest = max((len(f) for f in encoded), default=0)
        self.hold = max(0, 3 * longest - 3)
        """Bytes a stream must keep back: the longest form with a CR LF between each byte,
        less one (a match that starts before that point is whole in what was seen)."""

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __call__(self, text: str) -> str:
        return self.in_text(text)

    def in_text(self, text: str) -> str:
        return text if self._text is None else self._text.sub(MASK, text)

    def in_bytes(self, data: bytes) -> bytes:
        return data if self._bytes is None else self._bytes.sub(MASK.encode(), data)

    def stream(self) -> StreamMasker:
        return StreamMasker(self)

    def search(self, data: bytes, start: int, end: int) -> re.Match[bytes] | None:
        """The first form that starts in ``data[start:end]`` (matches may run past ``end``)."""
        if self._bytes is None:
            return None
        match = self._bytes.search(data, start)
        return match if match is not None and match.start() < end else None


class StreamMasker:
    """Masks a byte stream fed in arbitrary chunks; ``flush`` at the end (or when idle)."""

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        if not self._masker:
            return data
        buffer = self._pending + data
        cut = len(buffer) - self._masker.hold
        if cut <= 0:
            self._pending = buffer
            return b""
        out: list[bytes] = []
        position = 0
        while (match := self._masker.search(buffer, position, cut)) is not None:
            out += [buffer[position : match.start()], MASK.encode()]
            position = match.end()
        emitted = max(position, cut)
        out.append(buffer[position:emitted])
        self._pending = buffer[emitted:]
        return b"".join(out)

    def flush(self) -> bytes:
        """Everything held back, masked: the stream ended, or went quiet."""
        pending, self._pending = self._pending, b""
        return self._masker.in_bytes(pending)
