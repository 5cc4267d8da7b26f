"""Client errors raised while reading one request; each becomes that request's 4xx, never a 5xx."""

from __future__ import annotations

# Reason labels are stable: they appear in error bodies, logs and the error counters.
REASON_BAD_REQUEST = "bad_request"
REASON_DECODE = "decode"
REASON_TOO_LARGE = "too_large"
REASON_UNSUPPORTED = "unsupported_format"


class InputError(Exception):
    """A problem with one request's input: HTTP status, stable reason label, readable message."""

    def __init__(self, message: str, status: int = 400, reason: str = REASON_BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason

    def to_json(self) -> dict:
        return {"code": self.status, "type": self.reason, "message": self.message}
