"""Colocated mode (both phases in each worker) serves the same tokens as the offline engine,
on the same router and config as the disaggregated mode; tests/cluster/test_serving.py holds
the disaggregated cluster to the same offline outputs, so the three agree."""
from __future__ import annotations

import os

import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from cluster.config import load_config  # noqa: E402
from cluster.testing import BackgroundCluster  # noqa: E402
from engine import LLM, SamplingParams  # noqa: E402
from tandem_client import TandemClient  # noqa: E402
from tandem_client.errors import Unavailable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from logprobs_check import assert_logprobs_match_hf  # noqa: E402
from penalties import assert_served_penalties_equal_offline  # noqa: E402
from samples_check import assert_samples_prefill_once  # noqa: E402
from stop_strings import assert_served_text_equals_offline, offline_cases  # noqa: E402

PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "Tom had a red ball", "One day, a cat"]


@pytest.fixture(scope="module")
def colocated():
    cfg = load_config(None, ["mode=colocated", "router.grpc_port=0", "router.http_port=0", "pools.decode.workers=2",
                             "pools.decode.cpus_per_worker=0.25", "model.num_threads=1",
                             "router.health_poll_s=0.2"])
    with BackgroundCluster(cfg) as c:
        yield c


def test_colocated_cluster_matches_the_offline_engine_and_names_one_worker_for_both_phases(colocated):
    want = LLM("stories260K").generate(PROMPTS, SamplingParams(temperature=0, max_tokens=40))
    with TandemClient(colocated.target, timeout=120) as client:
        for prompt, offline in zip(PROMPTS, want):
            got = client.generate(prompt, max_tokens=40, temperature=0)
            assert got.token_ids == offline.token_ids
            assert got.text == offline.text
            assert got.usage.prefill_worker == got.usage.decode_worker
            assert got.usage.decode_worker.startswith("tandem-colocated-")
        assert client.cluster_info().mode == "colocated"


def test_stop_strings_give_the_offline_engines_text_through_grpc_and_http(colocated):
    url = f"http://127.0.0.1:{colocated.cluster.server.http_port}"
    assert_served_text_equals_offline(colocated.target, url, offline_cases())


def test_logprobs_equal_hf_transformers_log_softmax_through_sdk_and_openai(colocated):
    url = f"http://127.0.0.1:{colocated.cluster.server.http_port}"
    assert_logprobs_match_hf(colocated.target, url)


def test_n_seeded_samples_are_reproducible_and_prefill_their_prompt_once(colocated):
    assert_samples_prefill_once(colocated.target, f"http://127.0.0.1:{colocated.cluster.server.http_port}")


def test_penalties_and_min_tokens_give_the_offline_engines_output(colocated):
    assert_served_penalties_equal_offline(colocated.target)


def test_a_second_router_attaches_to_the_running_pools_and_leaves_them_running(colocated):
    second = BackgroundCluster(load_config(None, [
        "mode=colocated", "router.grpc_port=0", "pools.decode.workers=2", "pools.decode.cpus_per_worker=0.25"]))
    with second:
        assert not any(p.owned for p in second.cluster.pools.values())
        with TandemClient(second.target, timeout=60) as client:
            assert client.generate("Once upon a time", max_tokens=8, temperature=0).finish_reason == "length"
    with TandemClient(colocated.target, timeout=60) as client:   # the owner's pools still serve
        assert client.generate("Once upon a time", max_tokens=8, temperature=0).finish_reason == "length"


def test_with_no_healthy_worker_left_a_request_gets_unavailable_within_its_deadline(colocated):
    import time

    import ray

    for handle in colocated.cluster.pools["colocated"].handles.values():
        ray.kill(handle, no_restart=True)
    with TandemClient(colocated.target, timeout=20, retries=1) as client:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            client.generate("Once upon a time", max_tokens=8)
        assert time.monotonic() - t0 < 20
