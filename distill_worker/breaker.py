"""A small circuit breaker: after N consecutive failures calls fail fast for a cool-down, then one
trial call (half-open) decides whether to close it again."""

from __future__ import annotations

import time

from recdistill.core.errors import RecDistillError


class CircuitOpenError(RecDistillError):
    """The teacher failed too often recently; calls fail fast until the cool-down ends."""


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float) -> None:
        self.failures_to_open = failures
        self.reset_s = reset_s
        self.consecutive_failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset_s else "open"

    def check(self) -> None:
        if self.state == "open":
            raise CircuitOpenError(f"teacher circuit open for {self.reset_s:.0f}s after "
                                   f"{self.consecutive_failures} consecutive failures")

    def success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failures_to_open or self.state == "half-open":
            self.opened_at = time.monotonic()
