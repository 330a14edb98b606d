"""One base exception for the shared core; services map these to HTTP / gRPC codes in one place."""


class RecDistillError(Exception):
    """Base class of every error raised on purpose by Rec-Distill."""


class DataError(RecDistillError):
    """A dataset could not be fetched, read or validated."""


class ValidationError(RecDistillError):
    """An input (request, row, artifact) is invalid. `field` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SchemaError(RecDistillError):
    """A schema file that cannot be used: the message names the file, and the line or feature at fault."""


class SchemaMismatchError(RecDistillError):
    """A model artifact was built for a different feature schema than the one in use."""


class NotFoundError(RecDistillError):
    """The thing asked for does not exist (a model version, a dataset file)."""


class UnknownScenarioError(NotFoundError):
    """A request or an operator named a scenario the schema does not declare."""

    def __init__(self, scenario: str, known: list[str]) -> None:
        shown = repr(scenario) if len(scenario) <= 64 else f"{scenario[:64]!r}... ({len(scenario)} characters)"
        super().__init__(f"unknown scenario {shown}; this schema declares {known}")
        self.scenario = scenario


class ConflictError(RecDistillError):
    """The operation conflicts with the current state (activating an A/B test's control arm, deleting the
    active version, a change that lost a race with another writer)."""


class OverloadedError(RecDistillError):
    """A bounded queue is full: the caller should retry later (`retry_after_s`)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConfigError(RecDistillError):
    """A setting cannot be used as given (a malformed location, an unknown backend)."""


class BrokerUnavailableError(RecDistillError):
    """The shared store (Redis / Valkey) cannot be reached now: a transient condition, retried."""
