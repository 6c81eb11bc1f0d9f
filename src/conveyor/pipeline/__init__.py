"""The pipeline engine: a DAG of jobs run as real processes, with evidence of what ran.

The ``pipeline:`` block itself (``PipelineSpec``, ``JobSpec``, ...) is config: it lives in
``conveyor.config.pipeline`` and is read, ``extends:`` templates and all, with the rest of
conveyor.yaml (``project.config.pipeline``); it is re-exported here for the engine's users.
``plan`` decides (purely) what runs in which order, ``runner`` runs it,
``cache``/``reports``/``secrets`` are the runner's helpers.
"""

from conveyor.config.pipeline import JobSpec, PipelineSpec
from conveyor.errors import PipelineError
from conveyor.pipeline.plan import Plan, RunContext, build_plan
from conveyor.pipeline.runner import JobResult, PipelineRunner, RunResult, run_pipeline

__all__ = [
    "JobResult",
    "JobSpec",
    "PipelineError",
    "PipelineRunner",
    "PipelineSpec",
    "Plan",
    "RunContext",
    "RunResult",
    "build_plan",
    "run_pipeline",
]
