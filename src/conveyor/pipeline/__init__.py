"""The pipeline engine: a DAG of jobs run as real processes, with evidence of what ran.

``model`` is the ``pipeline:`` block, ``plan`` decides (purely) what runs in which order,
``runner`` runs it, ``cache``/``reports``/``secrets`` are the runner's helpers.
"""

from conveyor.pipeline.model import JobSpec, PipelineSpec
from conveyor.pipeline.plan import PipelineError, Plan, RunContext, build_plan
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
