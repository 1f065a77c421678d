"""romancy_nb: durable execution for Python that lives in Jupyter.

Workflows are async functions made durable by replay; activities are their recorded steps.
See the README for a tour, and ``romancy_nb.engine`` for how it works.
"""

from typing import Any

from romancy_nb.codecs import install as _install_codecs
from romancy_nb.engine import (
    Activity,
    ActivityCall,
    ActivityContext,
    App,
    Comparison,
    HistoryChange,
    Hooks,
    InstanceInfo,
    InstancePage,
    Registry,
    ReplayReport,
    ReplayStep,
    RetryPolicy,
    RunInfo,
    StepInfo,
    Undo,
    Workflow,
    WorkflowContext,
    activity,
    workflow,
)
from romancy_nb.engine.channels import ChannelMessage
from romancy_nb.engine.codec import InvalidArgumentsError
from romancy_nb.engine.events import ReceivedEvent
from romancy_nb.engine.failures import register_error
from romancy_nb.errors import (
    ActivityTimeoutError,
    AttemptError,
    ChannelMessageTimeoutError,
    ChannelModeConflictError,
    ChannelNotSubscribedError,
    DatabaseLockedError,
    DeterminismViolation,
    EventTimeoutError,
    InvalidWorkflowState,
    RetryExhaustedError,
    RomancyError,
    SerializationError,
    SharedFileError,
    StepNotFound,
    StoreError,
    StoreUnavailableError,
    TerminalError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotFound,
)
from romancy_nb.store import connect

__version__ = "0.1.0"

# Values of other libraries (pandas DataFrames...) are stored the same way in scripts,
# workers and notebooks; the codecs import their library only when a value needs it.
_install_codecs()

# The notebook layer (views, the default app) loads on first use, so that
# ``import romancy_nb`` never imports IPython or pandas.
_NOTEBOOK_NAMES = (
    "compare",
    "current_app",
    "events",
    "history",
    "instances",
    "llm_calls",
    "messages",
    "outbox",
    "panel",
    "timers",
    "wait_until",
)


def __getattr__(name: str) -> Any:
    if name in _NOTEBOOK_NAMES:
        from romancy_nb import notebook

        return getattr(notebook, name)
    if name == "ai":  # rn.ai loads on first use: the model clients stay out of the import
        import importlib

        return importlib.import_module("romancy_nb.ai")
    raise AttributeError(f"module 'romancy_nb' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext romancy_nb``: register the magics and bind the default app."""
    from romancy_nb.notebook.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext romancy_nb``: close the default app and remove the magics."""
    from romancy_nb.notebook.extension import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "Activity",
    "ActivityCall",
    "ActivityContext",
    "ActivityTimeoutError",
    "App",
    "AttemptError",
    "ChannelMessage",
    "ChannelMessageTimeoutError",
    "ChannelModeConflictError",
    "ChannelNotSubscribedError",
    "Comparison",
    "DatabaseLockedError",
    "DeterminismViolation",
    "EventTimeoutError",
    "HistoryChange",
    "Hooks",
    "InstanceInfo",
    "InstancePage",
    "InvalidArgumentsError",
    "InvalidWorkflowState",
    "ReceivedEvent",
    "Registry",
    "ReplayReport",
    "ReplayStep",
    "RetryExhaustedError",
    "RetryPolicy",
    "RomancyError",
    "RunInfo",
    "SerializationError",
    "SharedFileError",
    "StepInfo",
    "StepNotFound",
    "StoreError",
    "StoreUnavailableError",
    "TerminalError",
    "Undo",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowContext",
    "WorkflowFailed",
    "WorkflowNotFound",
    "__version__",
    "activity",
    "compare",
    "connect",
    "current_app",
    "events",
    "history",
    "instances",
    "llm_calls",
    "messages",
    "outbox",
    "panel",
    "register_error",
    "timers",
    "wait_until",
    "workflow",
]
