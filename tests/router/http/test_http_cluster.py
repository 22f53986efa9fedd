"""The front door of a running disaggregated cluster (real Ray pools, real redis-server, the
real store, stories260K) with the official ``openai`` client: equal to the gRPC path for
greedy requests, tenants isolated in the prefix caches, the KV of a departed client freed,
and the worker-side metrics moving."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import openai
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/router: the helpers

from frontdoor_helpers import KEY_A, KEY_B, sample, scrape, write_keys  # noqa: E402

from cluster.config import load_config  # noqa: E402
from cluster.testing import BackgroundCluster  # noqa: E402
from tandem_client import TandemClient  # noqa: E402

PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "The little dog was sad because"]
# Over one store chunk (256 tokens) and many KV blocks.
SHARED = ("Tom and his mom went to the market to buy apples, bread and milk for the picnic. "
          * 8)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    keys = write_keys(tmp_path_factory.mktemp("cluster-auth"))
    cfg = load_config(None, [
        "router.grpc_port=0", "router.http_port=0", "router.metrics_port=0",
        f"router.auth.keys_file={keys}", "router.auth.keys_env=TANDEM_TEST_NO_KEYS",
        "pools.prefill.cpus_per_worker=0.25", "pools.decode.cpus_per_worker=0.25",
        "model.num_threads=1", "router.health_poll_s=0.2"])
    with BackgroundCluster(cfg) as c:
        yield c


@pytest.fixture(scope="module")
def http_url(cluster) -> str:
    return f"http://127.0.0.1:{cluster.cluster.server.http_port}"


@pytest.fixture(scope="module")
def metrics_url(cluster) -> str:
    return f"http://127.0.0.1:{cluster.cluster.server.metrics_port}/metrics"


def _oai(http_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{http_url}/v1", api_key=key, max_retries=0, timeout=60)


def _grpc(cluster, key: str) -> TandemClient:
    return TandemClient(cluster.target, metadata=[("authorization", f"Bearer {key}")], timeout=60)


def _free_blocks(cluster) -> dict[str, int]:
    cluster.call(cluster.backend.registry.refresh_once())
    return {v.name: v.free_kv_blocks for pool in cluster.backend.registry.views.values()
            for v in pool.values()}


def test_openai_completions_and_chat_equal_the_grpc_path(cluster, http_url):
    with _oai(http_url, KEY_A) as oai, _grpc(cluster, KEY_A) as client:
        for prompt in PROMPTS:
            ref = client.generate(prompt, max_tokens=24, temperature=0)
            whole = oai.completions.create(model="stories260K", prompt=prompt, max_tokens=24,
                                           temperature=0)
            assert whole.choices[0].text == ref.text
            assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == \
                (ref.usage.prompt_tokens, ref.usage.completion_tokens)
            chunks = list(oai.completions.create(model="stories260K", prompt=prompt,
                                                 max_tokens=24, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
            ids = [t for c in chunks if c.choices for t in c.choices[0].model_extra["token_ids"]]
            assert ids == ref.token_ids
            assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
            assert chunks[-1].usage.completion_tokens == len(ref.token_ids)
        messages = [{"role": "user", "content": "Tell me a story about a frog."}]
        ref = client.generate("User: Tell me a story about a frog.\nAssistant:", max_tokens=20,
                              temperature=0)
        chat = oai.chat.completions.create(model="stories260K", messages=messages,
                                           max_tokens=20, temperature=0)
        assert chat.choices[0].message.content == ref.text
        assert chat.usage.prompt_tokens == ref.usage.prompt_tokens
        streamed = list(oai.chat.completions.create(model="stories260K", messages=messages,
                                                    max_tokens=20, temperature=0, stream=True,
                                                    stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == ref.text
        assert streamed[-1].usage.prompt_tokens == ref.usage.prompt_tokens


def test_tenants_do_not_share_cached_prefixes(cluster, http_url):
    with _oai(http_url, KEY_A) as alpha, _oai(http_url, KEY_B) as bravo:
        first = alpha.completions.create(model="stories260K", prompt=SHARED, max_tokens=2)
        again = alpha.completions.create(model="stories260K", prompt=SHARED, max_tokens=2)
        other = bravo.completions.create(model="stories260K", prompt=SHARED, max_tokens=2)
    assert first.usage.prompt_tokens > 256
    assert again.usage.prompt_tokens_details.cached_tokens >= 256     # alpha's own cache works
    assert other.usage.prompt_tokens_details.cached_tokens == 0       # bravo sees none of it


def test_tokenize_needs_a_key_while_version_and_metrics_are_open(cluster, http_url):
    """On the disaggregated cluster the router tokenizes without the model (torch-free)."""
    async def calls():
        async with aiohttp.ClientSession() as s:
            out = {}
            for name, method, path, body, key in (
                    ("tok_anon", "POST", "/tokenize", {"prompt": SHARED}, None),
                    ("tok", "POST", "/tokenize", {"prompt": SHARED}, KEY_A),
                    ("version", "GET", "/version", None, None),
                    ("metrics", "GET", "/metrics", None, None)):
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                async with s.request(method, http_url + path, json=body, headers=headers) as resp:
                    out[name] = (resp.status, await resp.text())
            ids = json.loads(out["tok"][1])["tokens"]
            async with s.post(http_url + "/detokenize", json={"tokens": ids},
                              headers={"Authorization": f"Bearer {KEY_A}"}) as resp:
                out["detok"] = (resp.status, await resp.text())
            return out
    out = asyncio.run(calls())
    assert out["tok_anon"][0] == 401
    assert out["tok"][0] == 200 and out["version"][0] == 200 and out["metrics"][0] == 200
    with _oai(http_url, KEY_A) as oai:
        used = oai.completions.create(model="stories260K", prompt=SHARED, max_tokens=1)
    assert json.loads(out["tok"][1])["count"] == used.usage.prompt_tokens
    assert json.loads(out["detok"][1])["prompt"] == SHARED
    assert "tandem_requests_total" in out["metrics"][1]


def test_a_client_leaving_a_cluster_stream_frees_its_kv(cluster, http_url):
    start = _free_blocks(cluster)

    async def leave_early():
        async with aiohttp.ClientSession() as s:
            resp = await s.post(f"{http_url}/v1/completions",
                                headers={"Authorization": f"Bearer {KEY_A}"},
                                json={"prompt": PROMPTS[0], "max_tokens": 400,
                                      "ignore_eos": True, "stream": True})
            assert resp.status == 200
            await resp.content.readline()
            await resp.content.readline()
            resp.close()
    asyncio.run(leave_early())
    end = time.monotonic() + 30
    while _free_blocks(cluster) != start and time.monotonic() < end:
        time.sleep(0.2)
    assert _free_blocks(cluster) == start


def test_worker_side_metrics_move_with_traffic(cluster, http_url, metrics_url):
    before = scrape(metrics_url)
    with _oai(http_url, KEY_B) as oai:
        for _ in range(2):
            oai.completions.create(model="stories260K", prompt=SHARED + "The end.", max_tokens=3)
    cluster.call(cluster.backend.registry.refresh_once())
    after = scrape(metrics_url)

    def moved(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("tandem_kv_transfer_bytes_total", codec="raw") > 0
    assert moved("tandem_store_decisions_total") >= 2
    assert moved("tandem_prefix_hit_tokens_total") > 0
    assert moved("tandem_requests_total", protocol="http", status="ok") == 2
    for role, worker in (("prefill", "tandem-prefill-0"), ("decode", "tandem-decode-0")):
        assert sample(after, "tandem_worker_healthy", role=role, worker=worker) == 1
        assert sample(after, "tandem_kv_blocks_free", role=role, worker=worker) > 0
    assert sample(after, "tandem_worker_prefill_tokens_per_second") > 0
