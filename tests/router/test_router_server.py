"""The router's gRPC server over a real engine: streaming, errors, deadlines, cancellation."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from router.config import RouterConfig
from protos.tandem.v1 import generate_pb2, info_pb2, tandem_service_pb2_grpc
from router.backends.local import LocalBackend
from router.testing import BackgroundRouter

LONG = dict(max_tokens=480, temperature=0.0, ignore_eos=True)


def request(text="Once upon a time", request_id="", **sampling):
    return generate_pb2.GenerateRequest(text=text, request_id=request_id,
                                        sampling=generate_pb2.SamplingParams(**sampling))


def test_generate_streams_deltas_then_one_finished_with_usage(stub):
    msgs = list(stub.Generate(request(max_tokens=12, temperature=0.0), timeout=30))
    assert all(m.HasField("delta") and not m.HasField("finished") for m in msgs[:-1])
    last = msgs[-1]
    assert last.HasField("finished")
    deltas = [m.delta for m in msgs if m.HasField("delta")]
    ids = [t for d in deltas for t in d.token_ids]
    assert [d.index for d in deltas] == [sum(len(x.token_ids) for x in deltas[:i])
                                         for i in range(len(deltas))]
    usage = last.finished.usage
    assert usage.completion_tokens == len(ids) == 12
    assert last.finished.reason == generate_pb2.FINISH_REASON_LENGTH
    assert usage.prompt_tokens == 5   # BOS + "Once upon a time"
    assert usage.ttft_ms > 0
    assert usage.prefill_worker == usage.decode_worker == "local-0"
    assert len({m.request_id for m in msgs}) == 1 and msgs[0].request_id


def test_one_token_request_is_answered_with_a_single_message(stub):
    (msg,) = list(stub.Generate(request(max_tokens=1, temperature=0.0), timeout=30))
    assert msg.HasField("finished") and len(msg.delta.token_ids) == 1
    assert msg.finished.usage.completion_tokens == 1


def test_output_matches_the_offline_engine_exactly(stub, new_llm):
    from engine import SamplingParams
    want = new_llm().generate(["Lily liked"], SamplingParams(max_tokens=16, temperature=0))[0]
    msgs = list(stub.Generate(request("Lily liked", max_tokens=16, temperature=0.0), timeout=30))
    assert [t for m in msgs for t in m.delta.token_ids] == want.token_ids
    assert "".join(m.delta.text for m in msgs) == want.text


def test_first_token_reaches_the_client_while_the_request_is_still_running(
        stub, on_engine, engine_idle):
    call = stub.Generate(request(request_id="early-1", **LONG), timeout=60)
    first = next(call)
    assert first.HasField("delta") and not first.HasField("finished")
    assert on_engine(lambda e: "early-1" in e.requests)
    call.cancel()
    engine_idle()


def test_client_cancel_aborts_the_request_and_frees_its_kv_blocks(stub, on_engine, engine_idle):
    total = engine_idle()
    call = stub.Generate(request(request_id="cancel-1", **LONG), timeout=60)
    next(call)
    assert on_engine(lambda e: e.free_block_count()) < total
    call.cancel()
    engine_idle()   # the abort reached the engine: no request held, every block free


def test_grpc_deadline_gives_deadline_exceeded_and_frees_blocks(stub, engine_held, engine_idle):
    with engine_held(), pytest.raises(grpc.RpcError) as info:    # 0.3 s pass with no token
        list(stub.Generate(request(**LONG), timeout=0.3))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    engine_idle()


def test_request_deadline_ms_is_enforced_by_the_router(stub, engine_held, engine_idle):
    req = request(**LONG)
    req.deadline_ms = 300
    with engine_held(), pytest.raises(grpc.RpcError) as info:    # 300 ms pass with no token
        list(stub.Generate(req, timeout=60))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline" in info.value.details()
    engine_idle()


def test_duplicate_in_flight_request_id_is_already_exists(stub, engine_idle):
    first = stub.Generate(request(request_id="dup-1", **LONG), timeout=60)
    next(first)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request(request_id="dup-1", max_tokens=2), timeout=30))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    first.cancel()
    engine_idle()


def test_model_and_cluster_info(stub):
    info = stub.GetModelInfo(info_pb2.GetModelInfoRequest(), timeout=10)
    assert (info.model, info.vocab_size, info.max_model_len) == ("stories260K", 512, 512)
    assert (info.num_layers, info.num_kv_heads, info.head_dim) == (5, 4, 8)
    assert list(info.codecs) == ["raw"] and info.mode == "colocated"
    cluster = stub.GetClusterInfo(info_pb2.GetClusterInfoRequest(), timeout=10)
    assert cluster.healthy and cluster.mode == "colocated"
    (pool,) = cluster.pools
    (worker,) = pool.workers
    assert worker.health == info_pb2.WORKER_HEALTH_HEALTHY
    assert 0 < worker.free_kv_blocks <= worker.total_kv_blocks


def test_health_service_reports_serving(router):
    with grpc.insecure_channel(router.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tandem.v1.Tandem"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_describes_the_tandem_service(router):
    with grpc.insecure_channel(router.target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"tandem.v1.Tandem", "grpc.health.v1.Health"} <= services
        proto = db.FindFileContainingSymbol("tandem.v1.Tandem")
        assert proto.package == "tandem.v1"
        assert [m.name for m in proto.service[0].method] == ["Generate", "GetModelInfo",
                                                              "GetClusterInfo"]


def test_stopped_backend_gives_unavailable_and_not_serving(wait_until, new_llm):
    backend = LocalBackend(new_llm())
    with BackgroundRouter(backend, RouterConfig(grpc_port=0, health_poll_s=0.05)) as router:
        router.call(backend.close())
        with grpc.insecure_channel(router.target) as channel:
            stub = tandem_service_pb2_grpc.TandemStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Generate(request(max_tokens=4), timeout=10))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            health = health_pb2_grpc.HealthStub(channel)
            wait_until(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                       == health_pb2.HealthCheckResponse.NOT_SERVING, what="NOT_SERVING")


def test_engine_crash_mid_stream_delivers_every_published_token_then_unavailable(new_llm):
    llm = new_llm()
    real_step = llm.engine.step
    produced = []

    # Fault injection: the engine dies on its 4th step, a few tokens into the stream. Every
    # token it published before dying reaches the client, then the failure (delivered at
    # once, the failure would overtake the deltas still in the worker's outbox).
    def failing_step():
        if len(produced) >= 3:
            raise RuntimeError("injected engine fault")
        outputs = real_step()
        produced.append([t for o in outputs for t in o.new_token_ids])
        return outputs

    llm.engine.step = failing_step
    with BackgroundRouter(LocalBackend(llm), RouterConfig(grpc_port=0)) as router:
        with grpc.insecure_channel(router.target) as channel:
            stub = tandem_service_pb2_grpc.TandemStub(channel)
            got = []
            with pytest.raises(grpc.RpcError) as info:
                for msg in stub.Generate(request(**LONG), timeout=30):
                    got.append(msg)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "injected engine fault" in info.value.details()
            assert not any(m.HasField("finished") for m in got)
            tokens = [t for m in got for t in m.delta.token_ids]
            assert tokens == [t for step in produced for t in step] and len(tokens) >= 1
            with pytest.raises(grpc.RpcError) as again:
                list(stub.Generate(request(max_tokens=2), timeout=10))
            assert again.value.code() == grpc.StatusCode.UNAVAILABLE


def test_admission_limit_gives_resource_exhausted(new_llm):
    with BackgroundRouter(LocalBackend(new_llm()),
                          RouterConfig(grpc_port=0, max_inflight=1)) as router:
        with grpc.insecure_channel(router.target) as channel:
            stub = tandem_service_pb2_grpc.TandemStub(channel)
            first = stub.Generate(request(**LONG), timeout=60)
            next(first)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Generate(request(max_tokens=2), timeout=10))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.cancel()
