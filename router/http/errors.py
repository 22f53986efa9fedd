"""HTTP errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``.

Router errors keep their meaning across protocols: INVALID_ARGUMENT is 400,
UNAUTHENTICATED 401, PERMISSION_DENIED 403, ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429
(with ``Retry-After`` and ``retry-after-ms``), UNAVAILABLE 503, DEADLINE_EXCEEDED 504.
"""
from __future__ import annotations

import math

import grpc
from aiohttp import web

from router.admission import AdmissionRejected
from router.errors import InvalidRequest, RouterError

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}
_TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                   413: "invalid_request_error", 429: "rate_limit_error"}
UNAVAILABLE_RETRY_AFTER_S = 1
# gRPC field paths (router.validation) as the OpenAI parameter a client sent.
_PARAM = {"sampling.max_tokens": "max_tokens", "sampling.temperature": "temperature",
          "sampling.top_p": "top_p", "sampling.top_k": "top_k", "sampling.seed": "seed",
          "sampling.stop": "stop", "sampling.stop_token_ids": "stop_token_ids",
          "sampling.presence_penalty": "presence_penalty",
          "sampling.frequency_penalty": "frequency_penalty",
          "sampling.repetition_penalty": "repetition_penalty", "sampling.min_tokens": "min_tokens",
          "sampling.logit_bias": "logit_bias", "sampling.logprobs": "logprobs",
          "prompt.text": "prompt", "prompt.token_ids": "prompt", "request_id": "X-Request-Id",
          "tenant": "X-Tandem-Tenant"}


class HttpError(Exception):
    """An HTTP-level refusal (bad JSON, unsupported parameter, unknown model...)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, err_type: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code
        self.err_type = err_type or _TYPE_OF_STATUS.get(status, "server_error")


def error_body(status: int, message: str, err_type: str, param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def openai_param(field: str, chat: bool = False) -> str:
    """The request parameter an InvalidRequest field path refers to."""
    base = field.split("[", 1)[0]
    name = _PARAM.get(base, base)
    return "messages" if chat and name == "prompt" else name


def response_for(exc: BaseException, chat: bool = False) -> web.Response:
    """The JSON error response for any exception that ends a request before streaming."""
    headers: dict[str, str] = {}
    if isinstance(exc, HttpError):
        status, err_type = exc.status, exc.err_type
        body = error_body(status, str(exc), err_type, exc.param, exc.code)
    elif isinstance(exc, RouterError):
        status, err_type = _STATUS.get(exc.code, (500, "server_error"))
        message, param = str(exc), None
        if isinstance(exc, InvalidRequest):
            param = openai_param(exc.field, chat)
            if message.startswith(exc.field):   # say it with the parameter the client sent
                index = exc.field[len(exc.field.split("[", 1)[0]):]
                message = param + index + message[len(exc.field):]
        body = error_body(status, message, err_type, param, exc.code.name.lower())
        if isinstance(exc, AdmissionRejected):
            body["error"]["code"] = exc.reason
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            headers["retry-after-ms"] = str(int(exc.retry_after_s * 1000))
    elif isinstance(exc, web.HTTPException):
        status = exc.status
        err_type = _TYPE_OF_STATUS.get(
            status, "server_error" if status >= 500 else "invalid_request_error")
        message = exc.text or exc.reason
        if status == 404:
            message = "no such endpoint; see GET /openapi.json"
        elif status == 413:
            message = f"request body too large: {exc.text or exc.reason}"
        body = error_body(status, message, err_type)
        if "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
    else:
        status, body = 500, error_body(500, f"internal error: {type(exc).__name__}", "server_error")
    if status in (429, 503) and "Retry-After" not in headers:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)   # a worker restarts in seconds
    return web.json_response(body, status=status, headers=headers)
