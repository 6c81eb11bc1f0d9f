"""The CLI's side of the HTTP API: find the project's server, call it, map its errors back."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path
from typing import Any

import httpx

from conveyor import errors
from conveyor.server.daemon import server_url

_BY_NAME: dict[str, type[errors.ConveyorError]] = {
    cls.__name__: cls
    for cls in (
        errors.NotFound,
        errors.Conflict,
        errors.AlreadyDeployed,
        errors.Refused,
        errors.BuildFailed,
        errors.ServerUnavailable,
        errors.StoreError,
    )
}


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class ApiClient:
    def __init__(self, root: Path, *, timeout: float = 30.0) -> None:
        url = server_url(root)
        if url is None:
            raise errors.ServerUnavailable(
                f"no Conveyor server is running for {root}",
                hint="start it with `conveyor up` (or `conveyor server` in the foreground)",
            )
        self.url = url
        self._http = httpx.Client(
            base_url=url, timeout=timeout, headers={"x-conveyor-actor": actor()}
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._call("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.ServerUnavailable(
                f"cannot reach the Conveyor server at {self.url}: {exc}",
                hint="check it with `conveyor up`; its log is .conveyor/server.log",
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json()


def _error(response: httpx.Response) -> errors.ConveyorError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = body.get("message") or f"the server answered {response.status_code}"
    hint = body.get("hint")
    name = body.get("error", "")
    if name == "ConfigError" and body.get("problems"):
        return errors.ConfigError(
            [
                errors.ConfigProblem(
                    file=p["file"],
                    line=p["line"],
                    field=p["field"],
                    message=p["message"],
                    hint=p["hint"],
                )
                for p in body["problems"]
            ]
        )
    cls = _BY_NAME.get(name, errors.ConveyorError)
    return cls(message, hint)
