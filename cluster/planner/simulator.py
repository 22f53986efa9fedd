"""A discrete-event simulator of Tandem's serving path, torch-free, for the planner.

It replays a workload (arrival time, prompt and output length per request) against a layout
(mode, worker counts, chunk budget) whose workers cost what a ``Profile`` says, and returns
each request's TTFT and TPOT, so the same objectives and goodput as ``tandem bench`` apply.

What it models, as the real system does it:
- **disaggregated**: a prompt goes to the prefill worker that frees first (the router's
  least-loaded pick, FCFS per worker) and its first token leaves when the prompt is computed;
  its KV then moves (``handoff``) to a decode worker picked by the power of two choices on
  load, which adds it to its continuous batch at the next step boundary (or queues it while
  the batch or the KV is full);
- **colocated**: every worker computes prompts and decodes. Each step carries the decode
  batch and a chunk of the head prompt, the chunk filling the step's token budget
  (``chunk_tokens``, Sarathi-Serve's chunked prefill); the prompt's first token leaves with
  the step that completes it, and the sequence joins the batch.
A step over b sequences with C context tokens costs ``profile.decode.ms(b, C)``; every
sequence's context grows by one per step. Between events (a join, a finish, a prompt done,
an arrival) the batch is constant, so the simulator jumps over whole runs of steps with the
arithmetic series of their costs instead of stepping: its cost grows with requests, not
tokens (100k requests of a 1,024-GPU fleet simulate in seconds).

**Shared cores** (``host_cores``, for workers that share one host's CPU, as on this 2-core
machine): each worker's costs are stretched by the expected processor share it gets,
``E[max(1, (1 + K + r) / cores)]``, where K is how many other workers are busy (each busy
with the probability its utilization, independently) and r the cores the router and client
use (``overhead.cpu_ms_per_token`` per streamed token). Utilizations come from the simulation
itself, so it runs to a fixed point (a few passes, damped).

Not modelled (yet): prefix-cache and store hits, admission refusals, preemption.
"""
from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass

import numpy as np

from cluster.planner.profile import Profile


@dataclass(slots=True)
class Layout:
    mode: str                         # "disaggregated" or "colocated"
    prefill_workers: int = 1          # disaggregated only
    decode_workers: int = 1           # colocated: all workers
    chunk_tokens: int = 512           # colocated: a step's token budget

    def __post_init__(self) -> None:
        if self.mode not in ("disaggregated", "colocated"):
            raise ValueError(f"mode must be 'disaggregated' or 'colocated', got {self.mode!r}")
        if self.decode_workers < 1 or (self.mode == "disaggregated" and self.prefill_workers < 1):
            raise ValueError("every pool needs at least one worker")
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {self.chunk_tokens}")

    @property
    def workers(self) -> int:
        return self.decode_workers + (self.prefill_workers if self.mode == "disaggregated" else 0)

    def describe(self) -> str:
        if self.mode == "colocated":
            return f"colocated x{self.decode_workers} (chunk {self.chunk_tokens})"
        return f"disaggregated {self.prefill_workers}P+{self.decode_workers}D"


@dataclass(slots=True)
class Workload:
    """Requests as arrays: arrival seconds (sorted), prompt and output tokens."""
    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    name: str = "workload"

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if n == 0 or len(self.prompt) != n or len(self.output) != n:
            raise ValueError("a workload needs one arrival, prompt and output length per request")
        if (self.prompt < 1).any() or (self.output < 1).any():
            raise ValueError("prompt and output lengths must be >= 1")
        if (np.diff(self.arrival_s) < 0).any():
            raise ValueError("arrivals must be sorted")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def rate(self) -> float:
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return (len(self) - 1) / span if span > 0 else float("inf")

    def with_rate(self, rate: float) -> Workload:
        """The same requests with arrivals rescaled to a mean of ``rate`` per second."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        scale = self.rate / rate if math.isfinite(self.rate) else 1.0
        return Workload((self.arrival_s - self.arrival_s[0]) * scale, self.prompt, self.output, self.name)

    def tiled(self, n: int) -> Workload:
        """``n`` requests: the workload repeated back to back (a trace shorter than ``n``)."""
        reps = -(-n // len(self))
        span = float(self.arrival_s[-1] - self.arrival_s[0]) + 1.0 / max(self.rate, 1e-9)
        arr = np.concatenate([self.arrival_s - self.arrival_s[0] + i * span for i in range(reps)])[:n]
        return Workload(arr, np.tile(self.prompt, reps)[:n], np.tile(self.output, reps)[:n], self.name)

    @classmethod
    def from_trace(cls, name: str, limit: int | None = None, start: int = 0,
                   max_len: int | None = None) -> Workload:
        """A shipped trace (``loadtest.traces``) or a trace file; lengths clipped to ``max_len``."""
        from loadtest.traces import load_trace
        t = load_trace(name, start=start, limit=limit)
        arr = np.array([r.timestamp_s for r in t.records], dtype=float)
        prompt = np.array([max(1, r.input_len) for r in t.records], dtype=np.int64)
        out = np.array([max(1, r.output_len) for r in t.records], dtype=np.int64)
        if max_len is not None:
            out = np.minimum(out, max(1, max_len // 4))
            prompt = np.minimum(prompt, max_len - out)
        return cls(arr, prompt, out, name)

    @classmethod
    def synthetic(cls, n: int, rate: float, prompt: int, output: int, seed: int = 0,
                  name: str | None = None) -> Workload:
        """Poisson arrivals; lengths drawn uniformly within +-50% of the means."""
        rng = np.random.default_rng(seed)
        arr = np.cumsum(rng.exponential(1.0 / rate, n))
        p = np.maximum(1, rng.integers(int(prompt * 0.5), int(prompt * 1.5) + 1, n))
        o = np.maximum(1, rng.integers(int(output * 0.5), int(output * 1.5) + 1, n))
        return cls(arr - arr[0], p, o, name or f"synthetic-{prompt}in-{output}out")


@dataclass(slots=True)
class Result:
    ttft_ms: np.ndarray
    tpot_ms: np.ndarray               # nan for one-token outputs
    end_s: np.ndarray

    def attainment(self, ttft_ms: float, tpot_ms: float) -> float:
        ok = (self.ttft_ms <= ttft_ms) & (np.isnan(self.tpot_ms) | (self.tpot_ms <= tpot_ms))
        return float(ok.mean())

    def summary(self) -> dict[str, float]:
        tpot = self.tpot_ms[~np.isnan(self.tpot_ms)]
        return {"ttft_p50_ms": float(np.percentile(self.ttft_ms, 50)),
                "ttft_p99_ms": float(np.percentile(self.ttft_ms, 99)),
                "tpot_p50_ms": float(np.percentile(tpot, 50)) if len(tpot) else 0.0,
                "tpot_p99_ms": float(np.percentile(tpot, 99)) if len(tpot) else 0.0}


class _Worker:
    """One worker's continuous batch (and, colocated, its prompt queue), advanced in runs of
    steps between events."""

    __slots__ = ("p", "t", "steps", "b", "base", "active", "waiting", "prompts", "queued_tokens",
                 "chunk", "kv_used", "sim", "stretch", "busy_ms")

    def __init__(self, sim: _Sim, chunk: int, stretch: float = 1.0) -> None:
        self.sim, self.p = sim, sim.profile
        self.stretch = stretch        # the share of a core it gets (shared host cores)
        self.busy_ms = 0.0
        self.t = 0.0                  # seconds: the last step boundary (or idle since)
        self.steps = 0
        self.b = 0
        self.base = 0                 # sum over active of (context at join - steps at join)
        self.active: list[tuple[int, int, int]] = []     # (finish step, request, context base)
        self.waiting: deque[int] = deque()               # joins held back: batch or KV full
        self.prompts: deque[list[int]] = deque()         # colocated: [request, tokens left]
        self.queued_tokens = 0
        self.chunk = chunk
        self.kv_used = 0

    def load(self) -> float:
        return self.b + len(self.waiting) + self.queued_tokens / max(1, self.chunk)

    # -- one run of k steps with a constant batch ---------------------------------------------
    def _cost(self) -> tuple[float, float, int, int]:
        """(a, q, chunk, prompt len): k steps cost a*k + q*k(k-1)/2 ms."""
        d, pf = self.p.decode, self.p.prefill
        chunk = plen = 0
        if self.prompts:
            req, left = self.prompts[0]
            chunk = min(left, max(1, self.chunk - self.b))
            plen = int(self.sim.prompt[req])
        a = 0.0
        if self.b:
            a += d.ms(self.b, self.base + self.b * self.steps)
        elif chunk:
            a += pf.base_ms
        if chunk:
            a += chunk * (pf.ms_per_token + pf.ms_per_token2 * plen)
        f = self.p.overhead.step_factor * self.stretch
        return a * f, d.ms_per_ctx_token * self.b * f, chunk, plen

    @staticmethod
    def _steps_to(a: float, q: float, span_ms: float, most: int) -> int:
        """The fewest steps (1..most) whose cost reaches ``span_ms``."""
        if span_ms <= 0:
            return 1
        if q <= 0:
            k = math.ceil(span_ms / a) if a > 0 else most
        else:
            h = q / 2
            k = math.ceil((-(a - h) + math.sqrt((a - h) ** 2 + 4 * h * span_ms)) / (2 * h))
        k = max(1, min(most, k))
        while k > 1 and a * (k - 1) + q * (k - 1) * (k - 2) / 2 >= span_ms:
            k -= 1
        return k

    def run_until(self, until: float) -> None:
        """Run steps until the first boundary at or after ``until`` (or until idle)."""
        while (self.b or self.prompts) and self.t < until:
            a, q, chunk, _ = self._cost()
            most = self.active[0][0] - self.steps if self.active else 1 << 60
            if chunk:     # whole chunks of the head prompt; its last, partial one on its own
                most = min(most, self.prompts[0][1] // chunk)
            if math.isinf(until):
                k = most
            else:
                k = self._steps_to(a, q, (until - self.t) * 1e3, most)
            run_ms = a * k + q * k * (k - 1) / 2
            self.t += run_ms / 1e3
            self.busy_ms += run_ms
            self.steps += k
            if chunk:
                head = self.prompts[0]
                head[1] -= chunk * k
                self.queued_tokens -= chunk * k
                if head[1] <= 0:
                    self.prompts.popleft()
                    self.sim.first_token(head[0], self.t, self)
            while self.active and self.active[0][0] <= self.steps:
                _, req, ctx = heapq.heappop(self.active)
                self.b -= 1
                self.base -= ctx
                self.kv_used -= int(self.sim.prompt[req] + self.sim.output[req])
                self.sim.end[req] = self.t
                self._admit_waiting()
        if not (self.b or self.prompts) and not math.isinf(until):
            self.t = max(self.t, until)          # idle until then

    def _admit_waiting(self) -> None:
        while self.waiting and self._fits(self.waiting[0]):
            self._add(self.waiting.popleft())

    def _fits(self, req: int) -> bool:
        lim = self.p.limits
        need = int(self.sim.prompt[req] + self.sim.output[req])
        return self.b < lim.max_batch and (self.kv_used + need <= lim.kv_tokens or self.b == 0)

    def _add(self, req: int) -> None:
        remaining = int(self.sim.output[req]) - 1
        ctx = int(self.sim.prompt[req]) + 1 - self.steps
        heapq.heappush(self.active, (self.steps + remaining, req, ctx))
        self.b += 1
        self.base += ctx
        self.kv_used += int(self.sim.prompt[req] + self.sim.output[req])

    def join(self, req: int, at: float) -> None:
        """A sequence (its first token out) joins the batch at the next boundary."""
        self.run_until(at)
        if self._fits(req) and not self.waiting:
            self._add(req)
        else:
            self.waiting.append(req)

    def submit(self, req: int, at: float) -> None:
        """Colocated: a prompt queues here."""
        self.run_until(at)
        tokens = int(self.sim.prompt[req])
        self.prompts.append([req, tokens])
        self.queued_tokens += tokens


class _Sim:
    def __init__(self, profile: Profile, layout: Layout, w: Workload, seed: int,
                 stretch: list[float] | None = None) -> None:
        self.profile, self.layout, self.w = profile, layout, w
        self.stretch = stretch or [1.0] * layout.workers    # prefill workers first
        self.busy: list[float] = []                         # ms each worker computed
        self.prompt, self.output = w.prompt, w.output
        n = len(w)
        self.first = np.full(n, np.nan)
        self.end = np.full(n, np.nan)
        self.rng = random.Random(seed)

    def pick(self, workers: list[_Worker], at: float) -> _Worker:
        if len(workers) == 1:
            return workers[0]
        a, b = self.rng.sample(workers, 2)
        a.run_until(at)
        b.run_until(at)
        return a if a.load() <= b.load() else b

    def first_token(self, req: int, at: float, worker: _Worker) -> None:
        self.first[req] = at
        if self.output[req] <= 1:
            self.end[req] = at
        else:
            worker.join(req, at)

    def run(self) -> Result:
        w, prof, lay = self.w, self.profile, self.layout
        arrival = w.arrival_s
        if lay.mode == "colocated":
            workers = [_Worker(self, lay.chunk_tokens, self.stretch[i]) for i in range(lay.decode_workers)]
            for req in range(len(w)):
                self.pick(workers, float(arrival[req])).submit(req, float(arrival[req]))
            for wk in workers:
                wk.run_until(math.inf)
            self.busy = [wk.busy_ms for wk in workers]
        else:
            free = [(0.0, i) for i in range(lay.prefill_workers)]
            heapq.heapify(free)
            ready = np.empty(len(w))
            prefill_busy = [0.0] * lay.prefill_workers
            for req in range(len(w)):
                t_free, i = heapq.heappop(free)
                cost = prof.prefill.ms(int(self.prompt[req])) * prof.overhead.step_factor * self.stretch[i]
                prefill_busy[i] += cost
                done = max(float(arrival[req]), t_free) + cost / 1e3
                heapq.heappush(free, (done, i))
                self.first[req] = done
                ready[req] = done + prof.handoff.ms(int(self.prompt[req]) * prof.kv_bytes_per_token) / 1e3
            workers = [_Worker(self, 1, self.stretch[lay.prefill_workers + i]) for i in range(lay.decode_workers)]
            for req in np.argsort(ready, kind="stable"):
                req = int(req)
                if self.output[req] <= 1:
                    self.end[req] = self.first[req]
                    continue
                at = float(ready[req])
                self.pick(workers, at).join(req, at)
            for wk in workers:
                wk.run_until(math.inf)
            self.busy = prefill_busy + [wk.busy_ms for wk in workers]
        # Serving's own latency (router, worker calls, streaming) delays what the client sees
        # of the first token; it keeps no worker busy.
        ttft = (self.first - arrival) * 1e3 + prof.overhead.ttft_ms
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(self.output > 1, (self.end - self.first) * 1e3 / (self.output - 1), np.nan)
        return Result(ttft, tpot, self.end)


CONTENTION_PASSES = 6
MAX_SHARED_WORKERS = 64


def simulate(profile: Profile, layout: Layout, workload: Workload, seed: int = 0,
             host_cores: float | None = None) -> Result:
    """Each request's TTFT and TPOT when ``workload`` meets ``layout`` on ``profile``'s workers
    (all on one host of ``host_cores`` cores, sharing them, when given)."""
    if host_cores is None:
        return _Sim(profile, layout, workload, seed).run()
    if not host_cores > 0:
        raise ValueError(f"host_cores must be > 0, got {host_cores}")
    if layout.workers > MAX_SHARED_WORKERS:
        raise ValueError(f"host_cores models workers sharing one host: at most {MAX_SHARED_WORKERS}, "
                         f"got {layout.workers}")
    stretch = [1.0] * layout.workers
    first, tokens = float(workload.arrival_s[0]), float(workload.output.sum())
    for _ in range(CONTENTION_PASSES):
        sim = _Sim(profile, layout, workload, seed, stretch)
        res = sim.run()
        span = max(float(np.nanmax(res.end_s)), float(workload.arrival_s[-1])) - first
        if span <= 0:
            return res
        util = [min(1.0, b / 1e3 / span) for b in sim.busy]
        other = profile.overhead.cpu_ms_per_token * tokens / 1e3 / span
        new = [cpu_share_stretch(util, i, other, host_cores) for i in range(len(util))]
        if max(abs(n - s) for n, s in zip(new, stretch)) < 0.005:
            break
        stretch = [(n + s) / 2 for n, s in zip(new, stretch)]     # damped: utilization moves with it
    return res


def cpu_share_stretch(util: list[float], i: int, other_cores: float, cores: float) -> float:
    """How much slower worker ``i`` computes while busy, on ``cores`` shared with the other
    workers (busy independently with probabilities ``util``) and ``other_cores`` of steady
    load: E[max(1, (1 + K + other) / cores)], K the number of other busy workers."""
    dist = [1.0]                      # P(K = k) over the other workers, by convolution
    for j, u in enumerate(util):
        if j == i:
            continue
        nxt = [0.0] * (len(dist) + 1)
        for k, pk in enumerate(dist):
            nxt[k] += pk * (1 - u)
            nxt[k + 1] += pk * u
        dist = nxt
    return sum(pk * max(1.0, (1 + k + other_cores) / cores) for k, pk in enumerate(dist))


def max_goodput(profile: Profile, layout: Layout, workload: Workload, ttft_ms: float, tpot_ms: float,
                attainment: float = 0.9, iters: int = 8, seed: int = 0, host_cores: float | None = None) -> float:
    """The highest arrival rate (req/s) at which ``attainment`` of the requests meet both
    objectives: the workload's arrivals rescaled, found by doubling then bisection."""
    def ok(rate: float) -> bool:
        return simulate(profile, layout, workload.with_rate(rate), seed,
                        host_cores).attainment(ttft_ms, tpot_ms) >= attainment
    lo, hi = 0.0, max(workload.rate, 1e-3) if math.isfinite(workload.rate) else 1.0
    while ok(hi):
        lo, hi = hi, hi * 2
        if hi > 1e9:
            return hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
