"""Steady HTTP load against the router, counting what users saw (see ``generator``)."""

from conveyor.load.generator import LoadGenerator, LoadReport, Outcome

__all__ = ["LoadGenerator", "LoadReport", "Outcome"]
