"""romancy_nb: durable execution for Python that lives in Jupyter.

Workflows are async functions made durable by replay; activities are their recorded steps.
See the README for a tour, and ``romancy_nb.engine`` for how it works.
"""

from romancy_nb.engine import (
    Activity,
    ActivityContext,
    App,
    InstanceInfo,
    InstancePage,
    Registry,
    RetryPolicy,
    StepInfo,
    Workflow,
    WorkflowContext,
    activity,
    workflow,
)
from romancy_nb.engine.codec import InvalidArgumentsError
from romancy_nb.errors import (
    ActivityTimeoutError,
    AttemptError,
    ChannelMessageTimeoutError,
    ChannelModeConflictError,
    DatabaseLockedError,
    DeterminismViolation,
    EventTimeoutError,
    InvalidWorkflowState,
    RetryExhaustedError,
    RomancyError,
    SerializationError,
    StoreError,
    TerminalError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotFound,
)

__version__ = "0.1.0"

__all__ = [
    "Activity",
    "ActivityContext",
    "ActivityTimeoutError",
    "App",
    "AttemptError",
    "ChannelMessageTimeoutError",
    "ChannelModeConflictError",
    "DatabaseLockedError",
    "DeterminismViolation",
    "EventTimeoutError",
    "InstanceInfo",
    "InstancePage",
    "InvalidArgumentsError",
    "InvalidWorkflowState",
    "Registry",
    "RetryExhaustedError",
    "RetryPolicy",
    "RomancyError",
    "SerializationError",
    "StepInfo",
    "StoreError",
    "TerminalError",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowContext",
    "WorkflowFailed",
    "WorkflowNotFound",
    "__version__",
    "activity",
    "workflow",
]
