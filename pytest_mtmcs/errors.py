"""Errors users see. Each one says what is wrong, where, and (where it can) how to fix it."""

from __future__ import annotations


class MtmcsError(Exception):
    """Base of every error this package raises on purpose."""


class SuiteError(MtmcsError):
    """Bad suite input. Rendered as one line: `file:line: field: message`."""

    def __init__(
        self, file: str, message: str, *, line: int | None = None, field: str | None = None
    ):
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: field '{self.field}': {self.message}"
        return f"{where}: {self.message}"


class ConfigError(MtmcsError):
    """A bad option or configuration value; names the option."""


class BackendError(MtmcsError):
    """The model backend failed for a request (after its own retries, where it has any)."""
