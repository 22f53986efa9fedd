"""The engine: requests in, token deltas out, one ``step()`` at a time.

Also the export/import boundary that disaggregation is built on: a prefill-only request
parks after its first token so its KV can be exported; ``import_kv`` resumes such a
sequence in another engine, exactly.
"""
from __future__ import annotations

import logging
import time

import torch

from engine.block_pool import BlockPool
from engine.config import KV_CACHE_BYTES, EngineConfig
from engine.errors import UnknownRequestError
from engine.fork import ForkGroups, fork_blocks
from engine.kv_export import KVLayout, SequenceKV
from engine.loader import LoadedModel, load_model
from engine.logits_processing import process_logits
from engine.logprobs import StepLogprobs
from engine.model_runner import ModelRunner
from engine.outputs import RequestOutput, TokenLogprob
from engine.sampler import generator_state, make_generator, restore_generator, sample
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Sequence, SequenceStatus
from engine.stopping import check_stop
from engine.tokenizer import IncrementalDetokenizer

logger = logging.getLogger(__name__)

STALL_LIMIT_S = 10.0   # how long a step with nothing schedulable waits for parked sequences' blocks
STALL_POLL_S = 0.002   # the driver's wait for a command meanwhile


class LLMEngine:
    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None):
        self.config = config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.loaded = loaded or load_model(config)
        cfg = self.loaded.config
        self.model_config = cfg
        self.tokenizer = self.loaded.tokenizer
        self.max_model_len = min(config.max_model_len or cfg.max_position_embeddings,
                                 cfg.max_position_embeddings)
        bs = config.block_size
        min_blocks = -(-self.max_model_len // bs) + 1
        num_blocks = config.num_kv_blocks or max(min_blocks, min(
            config.max_num_seqs * min_blocks, KV_CACHE_BYTES // self._block_bytes(bs)))
        if num_blocks < min_blocks:
            raise ValueError(f"num_kv_blocks={num_blocks} cannot hold one full context "
                             f"({min_blocks} blocks of {bs} tokens)")
        self.pool = BlockPool(num_blocks, bs)
        self.scheduler = Scheduler(self.pool, config.max_num_seqs, config.max_num_batched_tokens,
                                   config.enable_prefix_caching)
        self.runner = ModelRunner(self.loaded.model, num_blocks, bs, self.loaded.dtype, self.loaded.device,
                                  config.matmul_dtype)
        self.kv_layout = KVLayout(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim,
                                  str(self.loaded.dtype).removeprefix("torch."), self.loaded.fingerprint)
        self.eos_token_ids = set(cfg.eos_token_ids)
        self.requests: dict[str, Sequence] = {}
        self.forks = ForkGroups()
        self._stalled_since: float | None = None   # nothing schedulable while parked sequences hold blocks
        self._seed_rng = torch.Generator().manual_seed(config.seed)
        self.stats = {"prompt_tokens": 0, "cached_tokens": 0, "generated_tokens": 0, "steps": 0}

    def _block_bytes(self, block_size: int) -> int:
        cfg = self.model_config
        return 2 * cfg.num_layers * block_size * cfg.num_kv_heads * cfg.head_dim * \
            torch.empty((), dtype=self.loaded.dtype).element_size()

    # -- request lifecycle ---------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: list[int], sampling_params: SamplingParams,
                    prefill_only: bool = False, cached_prefix_kv: torch.Tensor | None = None,
                    cache_salt: bytes = b"", output_len: int = 0, output_text_offset: int = 0,
                    fork_group: str = "", fork_size: int = 1) -> None:
        """Queue a request. ``output_len`` > 0 resumes one whose KV was lost: the last
        ``output_len`` of ``prompt_token_ids`` are output it already generated, of whose text
        ``output_text_offset`` chars were streamed. Stop strings, ``max_tokens`` and the text
        then continue exactly where that output left off (seeded sampling restarts its RNG).
        ``fork_group``: samples of one request (``n`` > 1, ``fork_size`` of them) that
        prefill their shared prompt once (``engine.fork``)."""
        if not isinstance(fork_group, str):
            raise ValueError(f"fork_group must be a str, got {type(fork_group).__name__}")
        if isinstance(fork_size, bool) or not isinstance(fork_size, int) or fork_size < 1 or \
                fork_size > 1 and not fork_group:
            raise ValueError(f"fork_size must be an int >= 1 (> 1 only with a fork_group), got {fork_size!r}")
        if isinstance(output_len, bool) or not isinstance(output_len, int) or \
                not 0 <= output_len < len(prompt_token_ids or [None]):
            raise ValueError(f"output_len must be an int in [0, {len(prompt_token_ids or [])}), "
                             f"got {output_len!r}")
        prompt = prompt_token_ids[:len(prompt_token_ids) - output_len]
        self._validate_prompt(prompt_token_ids, sampling_params)   # covers the prompt part too
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        if cached_prefix_kv is not None:
            self._check_kv(cached_prefix_kv, max_tokens=len(prompt_token_ids) - 1, what="cached_prefix_kv")
        detok = IncrementalDetokenizer(self.tokenizer, prompt)
        seq = Sequence(request_id, list(prompt_token_ids), len(prompt), sampling_params, detok,
                       generator=self._generator_for(sampling_params), cache_salt=cache_salt,
                       prefill_only=prefill_only, pending_prefix_kv=cached_prefix_kv,
                       fork_group="" if output_len else fork_group, fork_size=1 if output_len else fork_size)
        if output_len:
            detok.step(seq.token_ids)
            seq.emitted_text_len = min(max(0, int(output_text_offset)), len(detok.text))
        self.requests[request_id] = seq
        ready = self.forks.add(seq)
        if ready is not None:
            self.scheduler.add(ready)

    def import_kv(self, seq_kv: SequenceKV) -> None:
        """Continue a sequence whose prompt (and any output) another engine computed."""
        if seq_kv.request_id in self.requests:
            raise ValueError(f"request_id {seq_kv.request_id!r} is already in use")
        seq_kv.validate(self.kv_layout)
        seq_kv.sampling.validate()
        self._check_logit_bias(seq_kv.sampling)
        if len(seq_kv.token_ids) > self.max_model_len:
            raise ValueError(f"sequence of {len(seq_kv.token_ids)} tokens exceeds max_model_len {self.max_model_len}")
        try:
            gen = restore_generator(seq_kv.rng_state)
        except RuntimeError as exc:
            raise ValueError(f"rng_state is not a valid generator state ({exc})") from exc
        prompt = seq_kv.token_ids[:seq_kv.prompt_len]
        detok = IncrementalDetokenizer(self.tokenizer, prompt)
        seq = Sequence(seq_kv.request_id, list(seq_kv.token_ids), seq_kv.prompt_len, seq_kv.sampling,
                       detok, generator=gen, pending_prefix_kv=seq_kv.kv,
                       cache_salt=seq_kv.extra.get("cache_salt", b""))
        detok.step(seq.token_ids)   # text of tokens produced before the hand-over
        seq.emitted_text_len = min(seq_kv.output_text_offset, len(detok.text))
        seq.first_token_time = time.monotonic()
        self.requests[seq.request_id] = seq
        self.scheduler.add(seq)

    def export_kv(self, request_id: str) -> SequenceKV:
        seq = self._get(request_id)
        if seq.status is not SequenceStatus.PARKED:
            raise ValueError(f"request {request_id!r} is {seq.status.value}, not parked after prefill")
        kv = self.runner.read_kv(seq, 0, seq.num_computed)
        return SequenceKV(request_id, list(seq.token_ids), seq.prompt_len, kv, seq.sampling,
                          generator_state(seq.generator), seq.emitted_text_len,
                          extra={"num_cached_tokens": seq.num_cached_tokens, "cache_salt": seq.cache_salt})

    def read_prefix_kv(self, request_id: str, num_tokens: int) -> torch.Tensor:
        """KV of a held sequence's first ``num_tokens`` tokens (for store write-back)."""
        seq = self._get(request_id)
        if not 0 < num_tokens <= seq.num_computed:
            raise ValueError(f"num_tokens must be in 1..{seq.num_computed}, got {num_tokens}")
        return self.runner.read_kv(seq, 0, num_tokens)

    def release(self, request_id: str) -> None:
        """Free a parked (exported) sequence's blocks."""
        seq = self._get(request_id)
        self.scheduler.release_blocks(seq)
        del self.requests[request_id]
        self._stalled_since = None

    def abort(self, request_id: str) -> RequestOutput | None:
        seq = self.requests.pop(request_id, None)
        if seq is None:
            return None
        self.scheduler.remove(seq)
        heir = self.forks.detach(seq)
        if heir is not None:       # the group's prompt is computed for the next sample instead
            self.scheduler.add(heir)
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"
        self._stalled_since = None
        return self._output(seq, [], "")

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work() or bool(self.forks.held)

    def idle_s(self) -> float | None:
        """How long the engine has nothing to compute: 0 when it has, else until a held
        fork-group leader is due (``engine.fork``); None when it holds nothing at all. While
        stalled on parked sequences' blocks, a short wait (for the command that frees them)."""
        if self._stalled_since is not None:
            return STALL_POLL_S
        return 0.0 if self.scheduler.has_work() else self.forks.wait_s()

    def free_block_count(self) -> int:
        return self.pool.num_free

    # -- the step ------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        for leader in self.forks.due():
            self.scheduler.add(leader)
        batch = self.scheduler.schedule()
        if not batch:
            return self._unstick()
        self._stalled_since = None
        sampling_rows = [i for i, (s, n) in enumerate(zip(batch.seqs, batch.num_new))
                         if s.num_computed + n == s.num_tokens]
        prompt_rows = [i for i, s in enumerate(batch.seqs)
                       if s.sampling.prompt_logprobs is not None and s.num_computed < s.prompt_len]
        logits, every = self.runner.run(batch.seqs, batch.num_new, sampling_rows, every_row_of=prompt_rows)
        for i, rows in every.items():
            _prompt_logprobs(batch.seqs[i], rows, batch.num_new[i])
        picked = [batch.seqs[i] for i in sampling_rows]
        logprobs = StepLogprobs.of(logits, [s.sampling.logprobs for s in picked])   # raw logits
        logits = process_logits(logits, picked, self.eos_token_ids)
        tokens = sample(logits, [s.sampling for s in picked], [s.generator for s in picked])
        for seq, n in zip(batch.seqs, batch.num_new):
            seq.num_computed += n
            self.scheduler.publish_full_blocks(seq)
        self.stats["steps"] += 1
        forked = [out for i, seq in enumerate(picked) if seq.fork_group and seq.num_output_tokens == 0
                  for out in self._fork(seq, logits[i:i + 1], logprobs, i)]
        return [self._append(seq, tok, logprobs.entry(i, tok) if logprobs else None)
                for i, (seq, tok) in enumerate(zip(picked, tokens))] + forked

    def _fork(self, leader: Sequence, row: torch.Tensor, logprobs: StepLogprobs | None,
              i: int) -> list[RequestOutput]:
        """The leader's prompt is computed: its followers take its KV and sample their first
        token from the same (processed) logits row, each with its own generator."""
        ready = []
        room = self.scheduler.max_num_seqs - len(self.scheduler.running)
        for f in self.forks.take_followers(leader):
            # Within the running cap, and a block to copy into; else it waits its turn and
            # computes on its own (the prefix cache still serves the prompt's full blocks).
            if len(ready) < room and fork_blocks(self.pool, leader, f, self.runner.copy_block):
                ready.append(f)
            else:
                self.scheduler.add(f)
        if not ready:
            return []
        tokens = sample(row.expand(len(ready), -1), [f.sampling for f in ready], [f.generator for f in ready])
        self.scheduler.running.extend(ready)
        return [self._append(f, tok, logprobs.entry(i, tok) if logprobs else None)
                for f, tok in zip(ready, tokens)]

    def _append(self, seq: Sequence, token: int, logprob: TokenLogprob | None = None) -> RequestOutput:
        if seq.num_output_tokens == 0:
            seq.first_token_time = time.monotonic()
            self.stats["prompt_tokens"] += seq.prompt_len
            self.stats["cached_tokens"] += seq.num_cached_tokens
        seq.token_ids.append(token)
        if logprob is not None:
            seq.logprobs.append(logprob)
        self.stats["generated_tokens"] += 1
        seq.detok.step(seq.token_ids)
        reason = check_stop(seq, token, self.eos_token_ids, self.max_model_len)
        if reason is not None:
            self._finish(seq, reason)
        elif seq.prefill_only:
            self.scheduler.running.remove(seq)
            seq.status = SequenceStatus.PARKED
        return self._output(seq, [token], _stream_delta(seq), None if logprob is None else [logprob])

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finish_reason = reason
        self.scheduler.remove(seq)
        seq.status = SequenceStatus.FINISHED
        self.requests.pop(seq.request_id, None)

    def _unstick(self) -> list[RequestOutput]:
        """Nothing could be scheduled. While parked sequences hold blocks (prefilled, their
        KV about to be exported and released by the worker that owns them), wait for them, up
        to ``STALL_LIMIT_S``; otherwise a lone sequence that cannot get blocks is aborted."""
        if not self.scheduler.running and not self.scheduler.waiting:
            return []
        now = time.monotonic()
        if any(s.status is SequenceStatus.PARKED for s in self.requests.values()):
            if self._stalled_since is None:
                self._stalled_since = now
            if now - self._stalled_since < STALL_LIMIT_S:
                return []
        self._stalled_since = None
        seq = (self.scheduler.running or list(self.scheduler.waiting))[0]
        logger.error("request %s cannot get KV blocks (%d free, parked sequences hold the rest?); aborting",
                     seq.request_id, self.pool.num_free)
        out = self.abort(seq.request_id)
        return [out] if out else []

    def _output(self, seq: Sequence, new_ids: list[int], new_text: str,
                new_logprobs: list[TokenLogprob] | None = None) -> RequestOutput:
        ttft = None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time
        return RequestOutput(seq.request_id, seq.prompt_token_ids, seq.output_ids,
                             seq.output_text, new_ids, new_text, seq.finish_reason,
                             seq.num_cached_tokens, ttft, new_logprobs,
                             seq.logprobs if seq.sampling.logprobs is not None else None,
                             seq.prompt_logprobs if seq.sampling.prompt_logprobs is not None else None,
                             seq.emitted_text_len - len(new_text))

    # -- teacher forcing (quality measurements) -------------------------------------------
    def prompt_logits(self, token_ids: list[int], prefix_kv: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at every position after an optional given prefix KV: [len - prefix, V]."""
        prefix = 0 if prefix_kv is None else int(prefix_kv.shape[2])
        self._validate_prompt(token_ids, SamplingParams(max_tokens=1))
        if prefix_kv is not None:
            self._check_kv(prefix_kv, max_tokens=len(token_ids) - 1, what="prefix_kv")
        seq = Sequence("__prompt_logits__", list(token_ids), len(token_ids), SamplingParams(max_tokens=1),
                       IncrementalDetokenizer(self.tokenizer, token_ids), pending_prefix_kv=prefix_kv)
        need = -(-len(token_ids) // self.pool.block_size)
        seq.block_table = self.pool.allocate(need)
        try:
            seq.num_computed = prefix
            return self.runner.all_logits(seq, len(token_ids) - prefix)
        finally:
            self.pool.free(seq.block_table)

    # -- helpers -------------------------------------------------------------------------
    def _validate_prompt(self, ids: list[int], params: SamplingParams) -> None:
        if not isinstance(params, SamplingParams):
            raise ValueError("sampling_params must be a SamplingParams")
        params.validate()
        if not ids:
            raise ValueError("prompt must not be empty")
        vocab = self.model_config.vocab_size
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise ValueError(f"prompt token ids must be ints in [0, {vocab})")
        self._check_logit_bias(params)
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit the model's context "
                             f"of {self.max_model_len} (at least one token must be generated)")

    def _check_logit_bias(self, params: SamplingParams) -> None:
        vocab = self.model_config.vocab_size
        if any(t >= vocab for t in params.logit_bias):
            raise ValueError(f"logit_bias token ids must be in [0, {vocab})")

    def _check_kv(self, kv: torch.Tensor, max_tokens: int, what: str) -> None:
        lay = self.kv_layout
        ok = kv.dim() == 5 and tuple(kv.shape[:2]) == (lay.num_layers, 2) and \
            tuple(kv.shape[3:]) == (lay.num_kv_heads, lay.head_dim)
        if not ok or not 0 < kv.shape[2] <= max_tokens:
            raise ValueError(f"{what} has shape {tuple(kv.shape)}; expected "
                             f"[{lay.num_layers}, 2, 1..{max_tokens}, {lay.num_kv_heads}, {lay.head_dim}]")

    def _generator_for(self, params: SamplingParams) -> torch.Generator | None:
        if params.greedy:
            return None
        seed = params.seed if params.seed is not None else int(
            torch.randint(0, 2**62, (1,), generator=self._seed_rng).item())
        return make_generator(seed)

    def _get(self, request_id: str) -> Sequence:
        try:
            return self.requests[request_id]
        except KeyError:
            raise UnknownRequestError(f"unknown request {request_id!r}") from None


def _prompt_logprobs(seq: Sequence, logits, n: int) -> None:
    """Extend ``seq.prompt_logprobs`` with what this step's ``n`` computed positions predict:
    position p's logits give prompt token p + 1 its logprob (the first prompt token has none)."""
    start = seq.num_computed
    if start == 0:
        seq.prompt_logprobs = [None]
    upto = min(start + n, seq.prompt_len - 1)        # the last prompt position predicts output
    if upto <= start:
        return
    targets = seq.token_ids[start + 1:upto + 1]
    rows = StepLogprobs(logits, list(range(upto - start)), [seq.sampling.prompt_logprobs] * (upto - start))
    seq.prompt_logprobs.extend(rows.entry(i, tok) for i, tok in enumerate(targets))


def _stream_delta(seq: Sequence) -> str:
    """Text to stream now. While a stop string could still complete, its possible first
    characters are held back: streamed text is never taken back by a later cut."""
    text = seq.output_text
    if seq.finish_reason is None and seq.sampling.stop:
        text = text[:max(0, len(text) - (max(map(len, seq.sampling.stop)) - 1))]
    delta = text[seq.emitted_text_len:]
    seq.emitted_text_len = max(seq.emitted_text_len, len(text))
    return delta
