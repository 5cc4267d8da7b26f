"""Client errors raised while reading one request; each becomes that request's 4xx, never a 5xx."""

from __future__ import annotations

__all__ = ["InputError", "REASON_BAD_REQUEST", "REASON_DECODE", "REASON_TOO_LARGE", "REASON_UNSUPPORTED"]

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

    def detached(self) -> InputError:
        """This error without its traceback and chained exceptions, fit to be kept as an outcome.

        A caught exception's traceback holds the frames it passed through, and each frame its
        caller (``f_back``) with all its locals: for an error caught inside a batch, the whole batch
        and its tensors. Kept as a request's outcome, that is a reference cycle (item -> error ->
        frame -> batch -> item) which only Python's cyclic collector frees, and it rarely runs its
        oldest generation, so every batch with one bad item pinned the batch's tensors for a long
        time: worker memory grew by tens of MB over a soak with malformed requests mixed in.
        """
        self.__traceback__ = None
        self.__context__ = None
        self.__cause__ = None
        return self
