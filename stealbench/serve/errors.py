"""The server's refusal: one exception type that protocol.py, binary.py and accounts.py raise and server.py answers."""

from __future__ import annotations

from typing import Any


class V2Error(Exception):
    """A request the server refuses: HTTP `status`, a one-line `message`, and extra fields for the JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


__all__ = ["V2Error"]
