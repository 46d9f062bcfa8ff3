"""Executors: run measures over the checkpoints of a series and write their metric shards.

``plan_measures`` resolves measure names and configs (validated before any work starts);
``run_measures`` runs them in this process (one checkpoint in memory at a time) or on Ray
(``executor="ray"``), skipping shards that exist.
"""

from phasescope.execute.plan import PlannedMeasure, plan_measures
from phasescope.execute.runner import EXECUTORS, ExecutionReport, WorkItem, plan_work, run_measures
from phasescope.execute.worker import UnitOutcome, measure_checkpoint

__all__ = ["EXECUTORS", "ExecutionReport", "PlannedMeasure", "UnitOutcome", "WorkItem", "measure_checkpoint",
           "plan_measures", "plan_work", "run_measures"]
