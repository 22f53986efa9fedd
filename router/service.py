"""The ``tandem.v1.Tandem`` gRPC servicer: authenticate, then the shared generate path.

Every request is authenticated (``authorization: Bearer <key>`` metadata) and validated
before the backend is touched; ``router.gateway.Gateway`` does the rest, for HTTP too. The
effective deadline is the earliest of the gRPC deadline, the request's ``deadline_ms`` and
the router's ``request_timeout_s``, so a client never waits forever even when a backend
hangs. When the client leaves, the handler task is cancelled and the backend's generator
is closed, which aborts the request on its worker. Undecodable request bytes are
INVALID_ARGUMENT (``add_to_server`` installs deserializers that never raise).
"""
from __future__ import annotations

import logging

import grpc
from google.protobuf.message import DecodeError

from protos.tandem.v1 import generate_pb2, info_pb2, tandem_service_pb2_grpc
from router import convert
from router.admission import AdmissionRejected
from router.auth import grpc_token
from router.errors import InvalidRequest, status_of
from router.gateway import Gateway

logger = logging.getLogger(__name__)

RETRY_AFTER_METADATA_KEY = "retry-after-ms"


class _Undecodable:
    """Stands for request bytes that are not a valid message of the method's type."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name, self.error = type_name, error


def _safe(message_type):
    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return _Undecodable(message_type.DESCRIPTOR.full_name, str(exc)[:200])
    return parse


def _check_decoded(request) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidRequest("request", f"not a valid {request.type_name}: {request.error}")


class TandemService(tandem_service_pb2_grpc.TandemServicer):
    """Implements Generate, GetModelInfo and GetClusterInfo over a ``Gateway``."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet finished."""
        return self._gateway.inflight

    def _principal(self, context: grpc.aio.ServicerContext):
        return self._gateway.authenticate(grpc_token(context.invocation_metadata()), "grpc")

    async def Generate(self, request: generate_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> None:
        request_id = ""
        try:
            principal = self._principal(context)
            _check_decoded(request)
            raw = convert.raw_request_from_proto(request)

            def learn_id(req) -> None:
                nonlocal request_id
                request_id = req.request_id

            async def sink(event) -> None:
                await context.write(convert.event_to_proto(request_id, event))

            await self._gateway.generate(raw, principal, sink, protocol="grpc",
                                         remaining_s=context.time_remaining(),
                                         on_request=learn_id)
        except Exception as exc:  # typed errors become statuses; a bug must not kill the server
            self._set_status(context, exc, request_id)

    @staticmethod
    def _set_status(context, exc: BaseException, request_id: str) -> None:
        code, details, trailing = status_of(exc)
        if code is grpc.StatusCode.INTERNAL:
            logger.error("request %s: %s", request_id, details)
        if isinstance(exc, AdmissionRejected):
            trailing = trailing + ((RETRY_AFTER_METADATA_KEY, str(int(exc.retry_after_s * 1000))),)
        context.set_code(code)
        context.set_details(details)
        if trailing:
            context.set_trailing_metadata(trailing)

    async def GetModelInfo(self, request: info_pb2.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> info_pb2.ModelInfo:
        try:
            self._principal(context)
            _check_decoded(request)
            return convert.model_info_to_proto(await self._gateway.backend.model_info())
        except Exception as exc:
            code, details, _ = status_of(exc)
            await context.abort(code, details)

    async def GetClusterInfo(self, request: info_pb2.GetClusterInfoRequest,
                             context: grpc.aio.ServicerContext) -> info_pb2.ClusterInfo:
        try:
            self._principal(context)
            _check_decoded(request)
            return convert.cluster_info_to_proto(await self._gateway.backend.cluster_info())
        except Exception as exc:
            code, details, _ = status_of(exc)
            await context.abort(code, details)


def add_to_server(service: TandemService, server: grpc.aio.Server) -> None:
    """Register ``service`` like the generated helper, but with deserializers that never
    raise, so malformed bytes get INVALID_ARGUMENT instead of grpc's INTERNAL."""
    handlers = {
        "Generate": grpc.unary_stream_rpc_method_handler(
            service.Generate, request_deserializer=_safe(generate_pb2.GenerateRequest),
            response_serializer=generate_pb2.GenerateResponse.SerializeToString),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            service.GetModelInfo, request_deserializer=_safe(info_pb2.GetModelInfoRequest),
            response_serializer=info_pb2.ModelInfo.SerializeToString),
        "GetClusterInfo": grpc.unary_unary_rpc_method_handler(
            service.GetClusterInfo, request_deserializer=_safe(info_pb2.GetClusterInfoRequest),
            response_serializer=info_pb2.ClusterInfo.SerializeToString),
    }
    name = "tandem.v1.Tandem"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
