"""One error shape for every refusal, so a client parses errors one way:

``{"error": {"code": "unknown_customer", "message": "...", "request_id": "req_...",
"details": [...]}}`` with the HTTP status saying which class of error it is. Codes are stable
(clients branch on them); messages are for people.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import AuthenticationError

MAX_DETAILS = 20
log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal the client can act on; nothing of the request was written."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_body(
    code: str, message: str, request_id: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, request_id_of(request), error.details),
        status_code=error.status,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(request, error)

    @app.exception_handler(AuthenticationError)
    async def authentication_error(request: Request, error: AuthenticationError) -> JSONResponse:
        return error_response(
            request,
            ApiError(401, error.code, error.message, headers={"WWW-Authenticate": "Bearer"}),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        details = [_detail(item) for item in error.errors()[:MAX_DETAILS]]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return error_response(
            request,
            ApiError(
                422, "invalid_request", f"The request is not valid: {summary}.", details=details
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            request,
            ApiError(
                error.status_code,
                codes.get(error.status_code, "http_error"),
                str(error.detail),
                headers=getattr(error, "headers", None),
            ),
        )

    app.add_exception_handler(Exception, _internal)


def _internal(request: Request, error: Exception) -> JSONResponse:
    log.error("Request %s failed", request_id_of(request), exc_info=error)
    return error_response(
        request,
        ApiError(
            500,
            "internal_error",
            "The request failed on the server; nothing of it was written. Quote the request id "
            "when reporting it.",
        ),
    )


def _detail(item: Any) -> dict[str, Any]:
    location = [str(part) for part in item.get("loc", ())]
    message = str(item.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    return {"field": ".".join(location), "message": message}
