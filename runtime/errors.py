"""Domain errors: raised anywhere, turned into values (never tracebacks) by the tool framework."""

from __future__ import annotations


class FtpilotError(Exception):
    """An error the person can act on: what went wrong, and a hint for what to do about it."""

    code = "error"

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}
        if code:
            self.code = code

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = self.details
        return out


class NotFound(FtpilotError):
    code = "not_found"


class BadInput(FtpilotError):
    code = "bad_input"


class OutsideWorkspace(FtpilotError):
    code = "outside_workspace"
