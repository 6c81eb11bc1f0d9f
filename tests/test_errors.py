"""The error tree is closed and survives HTTP: every class, its exit code and its words.

Each ``ConveyorError`` subclass is raised inside the real API app and read back from the
answer with ``errors.from_wire`` (what the CLI does): same class, same message, hint and
exit code, HTTP status as declared. Anything that is not a Conveyor error is a 500 that
says it is a bug, never a 4xx that blames the user.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor import errors
from conveyor.server.stack import Stack

from .server.support import Client, serve

CONFIG = """\
project: errs
services:
  web:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  dev:
"""


def example(cls: type[errors.ConveyorError]) -> errors.ConveyorError:
    if issubclass(cls, errors.ConfigError):
        problem = errors.ConfigProblem("conveyor.yaml", 3, "services.web.run", "bad", "fix it")
        return cls([problem])
    if issubclass(cls, errors.ExpressionError):
        return cls("unexpected ')'", 4, "a > )", "write a number")
    return cls(f"{cls.__name__} happened", hint=f"do something about {cls.__name__}")


CLASSES = sorted(errors.error_classes().values(), key=lambda cls: cls.__name__)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Client]]:
    with serve(tmp_path_factory.mktemp("errs"), CONFIG) as both:
        yield both


def test_the_tree_in_the_docstring_names_every_class() -> None:
    doc = errors.__doc__ or ""
    for cls in CLASSES:
        assert f" {cls.__name__} " in doc, f"{cls.__name__} is missing from errors.py's tree"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_round_trips_through_the_api(
    cls: type[errors.ConveyorError],
    served: tuple[Stack, Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack, client = served
    raised = example(cls)

    def fail(*args: object) -> None:
        raise raised

    monkeypatch.setattr(stack.app, "status", fail)
    response = client.get("/api/v1/status")
    assert response.status_code == cls.http_status
    back = errors.from_wire(response.json(), response.status_code)
    assert type(back) is cls
    assert (back.message, back.hint, back.exit_code) == (raised.message, raised.hint, cls.exit_code)
    if isinstance(raised, errors.ConfigError):
        assert isinstance(back, errors.ConfigError) and back.problems == raised.problems


def test_an_unknown_class_maps_to_its_nearest_known_ancestor() -> None:
    body = {
        "error": "BrandNewConflict",
        "kinds": ["BrandNewConflict", "Conflict", "ConveyorError"],
        "message": "m",
        "hint": None,
        "exit_code": 4,
    }
    back = errors.from_wire(body, 409)
    assert type(back) is errors.Conflict and back.exit_code == 4


def test_a_bug_is_a_500_that_says_so(
    served: tuple[Stack, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, client = served

    def fail(*args: object) -> None:
        raise ValueError("not a user's mistake")

    monkeypatch.setattr(stack.app, "status", fail)
    response = client.get("/api/v1/status")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "InternalError" and "bug" in body["message"]
    assert "not a user's mistake" not in body["message"]  # details go to the log
    back = errors.from_wire(body, 500)
    assert type(back) is errors.ConveyorError and back.exit_code == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/v1/releases", "not json", 400),
        ("post", "/api/v1/releases", {"service": 3, "env": "dev", "artifact": "x"}, 422),
        ("post", "/api/v1/rollback", {"service": "web", "env": "dev", "to": -1}, 400),
        ("get", "/api/v1/events?limit=-1", None, 400),
        ("get", "/api/v1/events?limit=abc", None, 400),
        ("get", "/api/v1/history?service=web&env=dev&limit=100000", None, 400),
        ("post", "/api/v1/control", {"service": "web", "env": "dev", "action": "explode"}, 400),
    ],
)
def test_bad_requests_are_4xx_with_the_field(
    served: tuple[Stack, Client], method: str, path: str, body: object, status: int
) -> None:
    _, client = served
    if body is None:
        response = client.request(method, path)
    elif isinstance(body, str):
        response = client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = client.request(method, path, json_body=body)
    assert response.status_code in (status, 400, 422), response.text
    assert 400 <= response.status_code < 500
    assert response.json()["message"]


def test_json_is_accepted_only_as_json(served: tuple[Stack, Client]) -> None:
    """A browser form (text/plain, no preflight) cannot create a release."""
    _, client = served
    body = '{"service": "web", "env": "dev", "artifact": "abcdef1"}'
    response = client.post("/api/v1/releases", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]


def test_bodies_are_bounded(served: tuple[Stack, Client]) -> None:
    _, client = served
    huge = b'{"service": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = client.post(
        "/api/v1/releases", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert len(response.content) < 4096  # never echoed back
