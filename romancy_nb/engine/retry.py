"""Retry policies for activities.

Resolution order: the activity's own policy, then the app's ``default_retry``, then
:meth:`RetryPolicy.default`. Attempts are recorded in the store, so a crash in the middle of
a retry sequence resumes with the next attempt, not the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from romancy_nb.errors import TerminalError


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failing activity.

    The delay before attempt ``n + 1`` is ``initial_interval * multiplier ** (n - 1)``,
    capped at ``max_interval``: the default gives 1 s, 2 s, 4 s, 8 s between 5 attempts.
    ``non_retryable`` lists exception types that fail at once, like :class:`TerminalError`.
    """

    max_attempts: int = 5
    initial_interval: float = 1.0
    multiplier: float = 2.0
    max_interval: float = 60.0
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ValueError("retry intervals cannot be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    @classmethod
    def default(cls) -> RetryPolicy:
        """5 attempts, 1 s / 2 s / 4 s / 8 s apart (capped at 60 s)."""
        return cls()

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt: any error fails the activity."""
        return cls(max_attempts=1)

    @classmethod
    def fixed(cls, max_attempts: int, interval: float) -> RetryPolicy:
        """``max_attempts`` attempts, always ``interval`` seconds apart."""
        return cls(max_attempts, interval, 1.0, interval)

    @classmethod
    def exponential(
        cls, max_attempts: int, initial: float = 1.0, maximum: float = 60.0
    ) -> RetryPolicy:
        """Doubling delays from ``initial`` up to ``maximum``."""
        return cls(max_attempts, initial, 2.0, maximum)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.initial_interval * self.multiplier ** (attempt - 1), self.max_interval)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt ``attempt`` failing with ``error`` leaves another attempt."""
        if isinstance(error, (TerminalError, *self.non_retryable)):
            return False
        return attempt < self.max_attempts


def resolve(*candidates: RetryPolicy | None) -> RetryPolicy:
    """The first policy given, or the framework default."""
    for policy in candidates:
        if policy is not None:
            return policy
    return RetryPolicy.default()
