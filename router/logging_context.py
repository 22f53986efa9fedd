"""Structured logs that carry the request id (and tenant) on every line about a request.

``request_context(request_id, tenant)`` binds both to a context variable for the code that
serves the request (the handler task, and the backend generator it iterates), and
``install()`` adds them to every ``LogRecord`` made in that context as ``record.request_id``
and ``record.tenant`` (``"-"`` outside a request). ``JsonFormatter`` writes one JSON object
per line with them; a plain format can use ``%(request_id)s``::

    from router.logging_context import configure_logging
    configure_logging("INFO", json_lines=True)
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator

_CURRENT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "tandem_request", default=None)
_INSTALLED = False
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s [%(request_id)s] %(message)s"


@contextlib.contextmanager
def request_context(request_id: str, tenant: str = "") -> Iterator[None]:
    """Log lines made inside the block (and in tasks it starts) carry this request's id."""
    token = _CURRENT.set((request_id, tenant))
    try:
        yield
    finally:
        try:
            _CURRENT.reset(token)
        except ValueError:   # closed in another context (a handler finalized at shutdown)
            _CURRENT.set(None)


def current_request_id() -> str | None:
    value = _CURRENT.get()
    return None if value is None else value[0]


def install() -> None:
    """Make every LogRecord carry ``request_id`` and ``tenant`` (idempotent, process-wide)."""
    global _INSTALLED
    if _INSTALLED:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        value = _CURRENT.get()
        record.request_id, record.tenant = value if value is not None else ("-", "-")
        return record

    logging.setLogRecordFactory(factory)
    _INSTALLED = True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, tenant, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "tenant": getattr(record, "tenant", "-"),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Root logging for a router process: text with ``[request_id]`` or JSON lines."""
    install()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
