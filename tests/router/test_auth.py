"""API keys and tenants, on a real router (gRPC and HTTP) over a real stories260K engine."""
from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest

from frontdoor_helpers import KEY_A, KEY_B, router_config, start_router, write_keys

from cluster.config import AuthConfig, ConfigError, load_config
from protos.tandem.v1 import generate_pb2, info_pb2, tandem_service_pb2_grpc
from router.auth import Authenticator, build_authenticator, parse_keys
from router.backends.local import LocalBackend
from router.server import RouterServer


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    keys = write_keys(tmp_path_factory.mktemp("auth"))
    r = start_router(config=router_config(keys))
    yield r
    r.stop()


def _generate(target: str, key: str | None, **fields):
    with grpc.insecure_channel(target) as channel:
        stub = tandem_service_pb2_grpc.TandemStub(channel)
        metadata = [("authorization", f"Bearer {key}")] if key else []
        req = generate_pb2.GenerateRequest(text="Once upon a time", **fields)
        req.sampling.max_tokens = 4
        req.sampling.temperature = 0
        return list(stub.Generate(req, metadata=metadata, timeout=30))


def _post(url: str, key: str | None, body: dict, headers: dict | None = None):
    async def go():
        hdrs = dict(headers or {})
        if key:
            hdrs["Authorization"] = f"Bearer {key}"
        async with aiohttp.ClientSession() as s:
            async with s.post(url, json=body, headers=hdrs) as resp:
                return resp.status, await resp.json(content_type=None)
    return asyncio.run(go())


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef", KEY_A + "x", "Bearer"])
def test_grpc_without_or_with_a_wrong_key_is_unauthenticated_and_does_no_work(router, key):
    steps = router.engine(lambda e: e.stats["steps"])
    with pytest.raises(grpc.RpcError) as info:
        _generate(router.target, key)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(router.target) as channel:
        stub = tandem_service_pb2_grpc.TandemStub(channel)
        with pytest.raises(grpc.RpcError) as info2:
            stub.GetModelInfo(info_pb2.GetModelInfoRequest(), timeout=10)
    assert info2.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert router.engine(lambda e: e.stats["steps"]) == steps


@pytest.mark.parametrize("header", [None, "Bearer wrong-key-0123456789abcdef", f"Basic {KEY_A}",
                                    f"Bearer {KEY_A[:-1]}"])
def test_http_without_or_with_a_wrong_key_is_401_and_does_no_work(router, header):
    steps = router.engine(lambda e: e.stats["steps"])
    headers = {"Authorization": header} if header else {}
    status, body = _post(f"{router.http_url}/v1/completions", None,
                         {"model": "stories260K", "prompt": "Hi", "max_tokens": 2}, headers)
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    status, _ = _post(f"{router.http_url}/v1/chat/completions", None,
                      {"messages": [{"role": "user", "content": "Hi"}]}, headers)
    assert status == 401
    assert router.engine(lambda e: e.stats["steps"]) == steps


def test_valid_keys_work_on_both_protocols_and_run_as_their_tenant(router):
    out = _generate(router.target, KEY_A)
    assert out[-1].finished.usage.completion_tokens == 4
    status, body = _post(f"{router.http_url}/v1/completions", KEY_B,
                         {"model": "stories260K", "prompt": "Hi", "max_tokens": 3})
    assert status == 200 and body["usage"]["completion_tokens"] == 3
    # a key may name its own tenant, never another one
    assert _generate(router.target, KEY_A, tenant="alpha")[-1].HasField("finished")
    with pytest.raises(grpc.RpcError) as info:
        _generate(router.target, KEY_A, tenant="bravo")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    status, body = _post(f"{router.http_url}/v1/completions", KEY_A,
                         {"prompt": "Hi", "max_tokens": 2}, {"X-Tandem-Tenant": "bravo"})
    assert status == 403 and body["error"]["type"] == "permission_error"


def test_keys_file_format_and_errors_never_echo_a_key():
    keys = parse_keys("# c\nsecret-key-0123456789abcd\nteam-1:other-key-0123456789ab rps=2 "
                      "concurrency=3\n\n", "file")
    (d1, p1), (d2, p2) = keys
    assert p1.tenant == f"key-{d1.hex()[:8]}" and p2.tenant == "team-1"
    assert p2.limits.rps == 2.0 and p2.limits.concurrency == 3
    for bad in ["short", "bad tenant!:secret-key-0123456789abcd", "t:secret-key-0123456789abcd x=1",
                "t:secret-key-0123456789abcd rps=-1", "t:secret-key-0123456789abcd rps=nan"]:
        with pytest.raises(ConfigError) as info:
            parse_keys(bad, "file")
        assert "secret-key" not in str(info.value)
    with pytest.raises(ConfigError):
        Authenticator(parse_keys(f"a:{KEY_A}\nb:{KEY_A}", "file"))


def test_auth_is_on_off_loopback_and_keys_never_come_from_the_command_line(tmp_path):
    keys = write_keys(tmp_path)
    assert not build_authenticator(AuthConfig(keys_env="NO_SUCH_VAR"), "127.0.0.1", {}).enabled
    assert build_authenticator(AuthConfig(keys_file=keys), "127.0.0.1", {}).enabled
    with pytest.raises(ConfigError, match="router.auth"):
        build_authenticator(AuthConfig(keys_env="NO_SUCH_VAR"), "0.0.0.0", {})
    env = {"MY_KEYS": f"alpha:{KEY_A}, bravo:{KEY_B}"}
    auth = build_authenticator(AuthConfig(keys_env="MY_KEYS"), "0.0.0.0", env)
    assert auth.authenticate(KEY_B).tenant == "bravo"
    assert not build_authenticator(AuthConfig(enabled=False), "0.0.0.0", {}).enabled
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, [f"router.auth.keys={KEY_A}"])
    with pytest.raises(ConfigError, match="router.auth.keys_file"):
        build_authenticator(AuthConfig(keys_file=str(tmp_path / "missing")), "127.0.0.1", {})


def test_a_router_on_all_interfaces_without_keys_refuses_to_start():
    backend = LocalBackend(model_config=None)
    server = RouterServer(backend, router_config(host="0.0.0.0"))

    async def start():
        await server.start()
    with pytest.raises(ConfigError, match="no API key"):
        asyncio.run(start())
    assert not asyncio.run(backend.health())   # nothing was started


@pytest.mark.parametrize("sharing", [False, True])
def test_the_tenant_salts_the_prefix_cache_unless_sharing_is_opted_in(tmp_path, sharing):
    prompt = "Tom and his mom went to the market to buy apples and bread. " * 5
    r = start_router(config=router_config(write_keys(tmp_path)), tenant_sharing=sharing)
    try:
        cached = {}
        for name, key in (("alpha", KEY_A), ("alpha-again", KEY_A), ("bravo", KEY_B)):
            out = _generate_text(r.target, key, prompt)
            cached[name] = out[-1].finished.usage.cached_prompt_tokens
        assert cached["alpha"] == 0 and cached["alpha-again"] >= 32
        assert (cached["bravo"] >= 32) if sharing else (cached["bravo"] == 0)
    finally:
        r.stop()


def _generate_text(target: str, key: str, text: str):
    with grpc.insecure_channel(target) as channel:
        stub = tandem_service_pb2_grpc.TandemStub(channel)
        req = generate_pb2.GenerateRequest(text=text)
        req.sampling.max_tokens = 2
        return list(stub.Generate(req, metadata=[("authorization", f"Bearer {key}")], timeout=30))
