"""The ``http`` provider: GET a URL and judge a value picked out of its JSON body.

It suits smoke checks (``/health/ready`` must say ``"ready": true``) and services that expose
their own business metrics as JSON. As in Argo's web provider, a response that is not 2xx is
an *error* measurement (the check could not be made), not a failed one; a path that is not in
the document is an error too, since a condition cannot judge a value that is not there.

Paths are deliberately simple — ``$.checks[0].status`` or ``checks.0.status`` — not full
JSONPath: one value is picked, never a set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from conveyor.analysis.base import AnalysisContext, failed_to_measure, judged
from conveyor.core.analysis import Measurement, MetricSpec

_STEP = re.compile(r"\.([^.\[\]]+)|\[(-?\d+)\]|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]")
_BODY_EVIDENCE = 512  # characters of the body kept as evidence


class PathError(ValueError):
    pass


def pick(document: Any, path: str) -> Any:
    """The value at ``path`` ($.a.b[0], a.b.0, $['a b']) in a parsed JSON document."""
    text = path.strip()
    text = text[1:] if text.startswith("$") else text
    if text and not text.startswith((".", "[")):
        text = "." + text
    position, value = 0, document
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise PathError(f"cannot read json_path {path!r} at {text[position:]!r}")
        key, index, single, double = match.groups()
        step: str | int = (
            int(index) if index is not None else single if single is not None else double or key
        )
        if isinstance(step, str) and step.lstrip("-").isdigit() and isinstance(value, list):
            step = int(step)
        fits = isinstance(value, list) if isinstance(step, int) else isinstance(value, Mapping)
        try:
            if not fits:
                raise KeyError(step)
            value = value[step]
        except (IndexError, KeyError):
            raise PathError(f"json_path {path!r}: nothing at {match.group()!r}") from None
        position = match.end()
    return value


class HttpProvider:
    kind = "http"

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        started = context.clock()
        url = str(spec.config.get("url", ""))
        headers = {str(k): str(v) for k, v in dict(spec.config.get("headers") or {}).items()}
        path = spec.config.get("json_path")
        evidence: dict[str, Any] = {"url": url, "json_path": path}
        try:
            async with httpx.AsyncClient(timeout=spec.timeout) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as error:
            reason = str(error) or type(error).__name__
            return failed_to_measure(context, started, f"GET {url}: {reason}", evidence)
        evidence["status"] = response.status_code
        evidence["body"] = response.text[:_BODY_EVIDENCE]
        if not response.is_success:
            message = f"GET {url} answered {response.status_code} {response.reason_phrase}"
            return failed_to_measure(context, started, message, evidence)
        try:
            document: Any = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            if path:
                message = f"GET {url} did not answer JSON, so json_path {path!r} cannot apply"
                return failed_to_measure(context, started, message, evidence)
            document = response.text.strip()
        try:
            value = pick(document, str(path)) if path else document
        except PathError as error:
            return failed_to_measure(context, started, str(error), evidence)
        return judged(spec, value, context, started, evidence=evidence)
