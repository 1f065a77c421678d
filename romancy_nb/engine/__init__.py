"""The engine: workflows, activities, replay, retries, saga. No Jupyter, no SQL."""

from romancy_nb.engine.app import App
from romancy_nb.engine.compare import Comparison
from romancy_nb.engine.context import ActivityContext, WorkflowContext
from romancy_nb.engine.definitions import Activity, Workflow, activity, workflow
from romancy_nb.engine.hooks import ActivityCall, Hooks, RunInfo
from romancy_nb.engine.info import InstanceInfo, InstancePage, StepInfo
from romancy_nb.engine.registry import Registry, registry
from romancy_nb.engine.replayer import ReplayReport, ReplayStep
from romancy_nb.engine.retry import RetryPolicy
from romancy_nb.engine.travel import HistoryChange, Undo

__all__ = [
    "Activity",
    "ActivityCall",
    "ActivityContext",
    "App",
    "Comparison",
    "HistoryChange",
    "Hooks",
    "InstanceInfo",
    "InstancePage",
    "Registry",
    "ReplayReport",
    "ReplayStep",
    "RetryPolicy",
    "RunInfo",
    "StepInfo",
    "Undo",
    "Workflow",
    "WorkflowContext",
    "activity",
    "registry",
    "workflow",
]
