"""``tandem bench`` on the command line (``python -m loadtest``, the same commands that
``add_commands`` registers): a run, Ctrl-C with partial results, bad input, compare."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_until

from loadtest.cli import add_commands

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "loadtest", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_add_commands_registers_bench_run_sweep_and_compare():
    parser = argparse.ArgumentParser(prog="tandem")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "run", "--target", "tandem://h:1", "--rate", "3"])
    assert args.command == "bench" and args.bench_command == "run" and args.rate == 3.0
    args = parser.parse_args(["bench", "sweep", "--target", "http://h:1", "--bisect", "1:8"])
    assert args.bisect == "1:8" and callable(args.func)
    args = parser.parse_args(["bench", "compare", "a.json", "b.json"])
    assert (args.a, args.b) == ("a.json", "b.json")


def test_bench_run_prints_a_summary_and_writes_the_reports(tandem_url, tmp_path):
    code, out, err = finish(bench("run", "--target", tandem_url, "--rate", "20",
                                  "--max-requests", "6", "--output-len", "fixed:4",
                                  "--out", str(tmp_path / "a"), "--no-progress"))
    assert code == 0, err
    assert "goodput:" in out and "requests: 6 total, 6 ok" in out
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {
        "result.json", "requests.csv", "requests.jsonl", "latency_cdf.png"}
    code, out, err = finish(bench("compare", str(tmp_path / "a" / "result.json"),
                                  str(tmp_path / "a" / "result.json")))
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("goodput.goodput_rps"))
    assert row.split()[-1] == "1"            # a run against itself: ratio 1


def test_ctrl_c_stops_the_run_and_writes_partial_results(router, tandem_url, tmp_path):
    registry = router.server.gateway.metrics.registry

    def served() -> float:
        return registry.get_sample_value("tandem_requests_total",
                                         {"protocol": "grpc", "status": "ok"}) or 0.0

    before = served()
    proc = bench("run", "--target", tandem_url, "--rate", "5", "--max-requests", "10000",
                 "--duration", "120", "--out", str(tmp_path), "--no-progress", "--no-plots")
    # Ctrl-C once the run is under way: the router has served two of its requests.
    wait_until(lambda: served() >= before + 2 or proc.poll() is not None, timeout=120,
               what="two requests of the run served")
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc, timeout=60)
    assert code == 130, err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["outcome"]["interrupted"] and result["outcome"]["stop_reason"] == "interrupted"
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert len(lines) == result["figures"]["counts"]["total"] >= 2
    assert "partial results" in out


@pytest.mark.parametrize("args, message", [
    (["--input-len", "zipf:2"], "unknown distribution"),
    (["--arrival", "closed"], "needs --concurrency"),
    (["--workload", "trace"], "needs --trace"),
    (["--workload", "trace", "--trace", "nope"], "not a shipped trace"),
    (["--max-requests", "0"], "max_requests must be >= 1"),
])
def test_bad_options_exit_2_with_a_message_and_send_nothing(args, message):
    code, _, err = finish(bench("run", "--target", "tandem://127.0.0.1:9", *args))
    assert code == 2 and message in err and "Traceback" not in err


def test_sweep_needs_rates_or_a_bisection_range():
    code, _, err = finish(bench("sweep", "--target", "tandem://127.0.0.1:9"))
    assert code == 2 and "--rates" in err
    code, _, err = finish(bench("sweep", "--target", "tandem://127.0.0.1:9", "--bisect", "8"))
    assert code == 2 and "LOW:HIGH" in err
