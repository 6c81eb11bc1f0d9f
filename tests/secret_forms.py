"""A secret, the forms a tool would print it in, and a program that prints them all.

Written independently of ``core.masking`` on purpose: the tests state what must never reach
a file, the masker is what makes it so. The value has characters that every encoding
changes (quote, backslash, slash, space, non-ASCII) and base64 that uses ``+`` and ``/``.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.parse
from pathlib import Path

SECRET = 'pa"ss\\w/rd ü~>?>?-s3cr3t'
VARIABLE = "CONVEYOR_TEST_DB_PASSWORD"


def forms(secret: str = SECRET) -> dict[str, str]:
    raw = secret.encode()
    b64 = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    return {
        "plain": secret,
        "base64": b64,
        "base64-unpadded": b64.rstrip("="),
        "base64-url": url,
        "base64-url-unpadded": url.rstrip("="),
        "base64-echo": base64.b64encode(raw + b"\n").decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "url-encoded": urllib.parse.quote(secret, safe=""),
        "form-encoded": urllib.parse.quote_plus(secret),
        "json": json.dumps(secret)[1:-1],
        "json-ascii-off": json.dumps(secret, ensure_ascii=False)[1:-1],
        "reversed": secret[::-1],
    }


def needles(secret: str = SECRET) -> dict[str, bytes]:
    """What must not appear in any file: every form, and the middle of a Basic auth header."""
    found = {name: form.encode() for name, form in forms(secret).items()}
    basic = base64.b64encode(b"user:" + secret.encode()).decode()
    found["basic-auth-middle"] = basic[8:-4].encode()
    return found


PRINTER = r"""
import base64, json, os, sys, time, urllib.parse
s = os.environ[sys.argv[1]]
raw = s.encode()
out = sys.stdout
for text in (
    s,
    base64.b64encode(raw).decode(),
    base64.b64encode(raw).decode().rstrip("="),
    base64.urlsafe_b64encode(raw).decode(),
    base64.urlsafe_b64encode(raw).decode().rstrip("="),
    base64.b64encode(raw + b"\n").decode(),
    raw.hex(),
    raw.hex().upper(),
    urllib.parse.quote(s, safe=""),
    urllib.parse.quote_plus(s),
    json.dumps({"password": s}),
    json.dumps({"password": s}, ensure_ascii=False),
    s[::-1],
    "Authorization: Basic " + base64.b64encode(b"user:" + raw).decode(),
    "url: https://user:" + urllib.parse.quote(s, safe="") + "@db.example/shop",
):
    out.write("printed: " + text + "\n")
    out.flush()
# split across lines, and across two writes
out.write("wrapped: " + "\n".join(s[i:i + 5] for i in range(0, len(s), 5)) + "\n")
out.flush()
half = len(s) // 2
out.write("halves: " + s[:half])
out.flush()
time.sleep(0.05)
out.write(s[half:] + "\n")
out.write("b64-wrapped: " + "\r\n".join(
    base64.b64encode(raw).decode()[i:i + 8] for i in range(0, 40, 8)) + "\n")
out.write("done printing\n")
out.flush()
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
"""


def printer_argv(variable: str = VARIABLE, linger: float | None = None) -> list[str]:
    argv = [sys.executable, "-c", PRINTER, variable]
    return argv if linger is None else [*argv, str(linger)]


def files_holding(root: Path, secret: str = SECRET) -> dict[str, list[str]]:
    """Form name -> files under ``root`` whose bytes contain that form."""
    hits: dict[str, list[str]] = {}
    wanted = needles(secret)
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        for name, needle in wanted.items():
            if needle in data:
                hits.setdefault(name, []).append(str(path.relative_to(root)))
    return hits
