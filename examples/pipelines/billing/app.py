"""The billing service (a stub: the pipeline, not the service, is the point here)."""

NAME = "billing"


def greet(who: str) -> str:
    return f"{NAME}: hello {who}"
