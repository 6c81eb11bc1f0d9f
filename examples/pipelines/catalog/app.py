"""The catalog service (a stub: the pipeline, not the service, is the point here)."""

NAME = "catalog"


def greet(who: str) -> str:
    return f"{NAME}: hello {who}"
