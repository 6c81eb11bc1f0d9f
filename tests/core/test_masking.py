"""Masking (core/masking.py): every documented form, in text, in bytes, and in a stream."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.core.masking import MASK, MIN_ENCODED, Masker, forms

SECRET = 'pa"ss\\w/rd ü~>?>?-s3cr3t'
RAW = SECRET.encode()

ENCODED = {
    "plain": SECRET,
    "base64": base64.b64encode(RAW).decode(),
    "base64-unpadded": base64.b64encode(RAW).decode().rstrip("="),
    "base64-url": base64.urlsafe_b64encode(RAW).decode(),
    "base64-url-unpadded": base64.urlsafe_b64encode(RAW).decode().rstrip("="),
    "base64-of-echo": base64.b64encode(RAW + b"\n").decode(),
    "hex": RAW.hex(),
    "HEX": RAW.hex().upper(),
    "url": urllib.parse.quote(SECRET, safe=""),
    "url-keep-slash": urllib.parse.quote(SECRET),
    "form": urllib.parse.quote_plus(SECRET),
    "json": json.dumps(SECRET)[1:-1],
    "json-unicode": json.dumps(SECRET, ensure_ascii=False)[1:-1],
    "reversed": SECRET[::-1],
}


@pytest.mark.parametrize("form", ENCODED.values(), ids=ENCODED)
def test_each_encoding_is_masked_in_text_and_bytes(form: str) -> None:
    masker = Masker([SECRET])
    line = f"before {form} after"
    assert masker(line) == f"before {MASK} after"
    assert masker.in_bytes(line.encode()) == f"before {MASK} after".encode()


@pytest.mark.parametrize("form", ENCODED.values(), ids=ENCODED)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_each_encoding_is_masked_when_wrapped_across_lines(form: str, newline: str) -> None:
    wrapped = newline.join(form[i : i + 7] for i in range(0, len(form), 7))
    assert Masker([SECRET])(f"x {wrapped} y") == f"x {MASK} y"


@pytest.mark.parametrize("prefix", [b"user:", b"u:", b"ab:", b"a", b"abcdef"])
def test_base64_of_the_secret_inside_something_longer(prefix: bytes) -> None:
    """Basic auth: base64("user:" + secret). The characters that encode only the secret's
    bytes are masked; the few at each edge also encode a neighbour and stay."""
    encoded = base64.b64encode(prefix + RAW + b"@host").decode()
    first_group = -(-len(prefix) // 3)  # the first 3-byte group that starts inside the secret
    last_group = (len(prefix) + len(RAW)) // 3  # the end of the last one that ends inside it
    expected = encoded[: 4 * first_group] + MASK + encoded[4 * last_group :]
    assert Masker([SECRET])(encoded) == expected


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_a_stream_cut_anywhere_is_masked(chunk: int) -> None:
    text = "".join(f"line {i}: {form}\n" for i, form in enumerate(ENCODED.values()))
    data = text.encode()
    stream = Masker([SECRET]).stream()
    out = b"".join(stream.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    out += stream.flush()
    assert out.decode() == "".join(f"line {i}: {MASK}\n" for i in range(len(ENCODED)))


def test_a_masker_without_secrets_changes_nothing() -> None:
    masker = Masker(["", ""])
    assert not masker
    stream = masker.stream()
    assert (masker("text"), stream.feed(b"abc"), stream.flush()) == ("text", b"abc", b"")


def test_short_values_are_masked_literally_only() -> None:
    short = "ab"
    assert len(short) < MIN_ENCODED
    assert forms(short) == {"ab"}
    assert Masker([short])("xaby YWI=") == f"x{MASK}y YWI="


def test_multi_line_values_are_masked_line_by_line_too() -> None:
    key = "-----BEGIN KEY-----\nAAAAbbbbCCCC\n-----END KEY-----"
    masked = Masker([key])(f"{key}\nhalf: AAAAbbbbCCCC")
    assert "AAAAbbbbCCCC" not in masked and "BEGIN" not in masked


def test_the_longest_form_wins() -> None:
    masker = Masker(["abcd", "abcdefgh"])
    assert masker("xabcdefghx") == f"x{MASK}x"


@settings(deadline=None)  # correctness, not speed: a busy CI machine stalls some examples
@given(
    st.text(min_size=MIN_ENCODED, max_size=30).filter(lambda s: s.strip() == s and "\0" not in s),
    st.text(max_size=40),
    st.integers(min_value=1, max_value=9),
)
def test_no_encoding_survives_a_stream(secret: str, noise: str, chunk: int) -> None:
    raw = secret.encode()
    text = f"{noise}{secret} {base64.b64encode(raw).decode()} {raw.hex()}{noise}".encode()
    stream = Masker([secret]).stream()
    out = b"".join(stream.feed(text[i : i + chunk]) for i in range(0, len(text), chunk))
    out += stream.flush()
    assert raw not in out
    assert base64.b64encode(raw) not in out and raw.hex().encode() not in out
