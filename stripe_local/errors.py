"""Stripe's error shape, so callers exercise the same error handling as against real Stripe."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.responses import JSONResponse


class StripeError(Exception):
    """An error answered as Stripe does: ``{"error": {type, code, message, param}}``.

    ``code`` and ``param`` are None where Stripe sends none (callers must then rely on the
    message, as they would have to with Stripe). ``should_retry`` sets Stripe's
    ``Stripe-Should-Retry`` header, which stripe-python obeys before its own retry rules.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        should_retry: bool | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = error_type
        self.should_retry = should_retry
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body Stripe would send."""
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
            }
        }

    def response(self) -> JSONResponse:
        """The HTTP response Stripe would send."""
        headers = {**request_id_header(), **self.headers}
        if self.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if self.should_retry else "false"
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def request_id_header() -> dict[str, str]:
    """Stripe names every response with a ``Request-Id``."""
    return {"Request-Id": new_id("req")}


def new_id(prefix: str) -> str:
    """A Stripe-like object id: ``prefix_`` and 24 random hex digits."""
    return f"{prefix}_{secrets.token_hex(12)}"


def not_found(kind: str, object_id: str, param: str | None = "id") -> StripeError:
    """Stripe's ``resource_missing`` 404 for an object named in the URL."""
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)
