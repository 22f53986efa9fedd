# Tandem: two commands. `make run` and `make test` each bootstrap everything they need,
# idempotently: a second run does no work that is already done.
PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check -q
TORCH_PIN   := torch==2.13.0
LMCACHE_PIN := lmcache==0.5.6
STAMP       := $(VENV)/.stamps

export LMCACHE_TRACK_USAGE := false
export DO_NOT_TRACK := 1
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: run test bench bench-peer eval-check lint openapi protos setup redis clean help

help:
	@echo "make run    - set up and run Tandem on the embedded default model"
	@echo "make test   - set up and run the test suite"
	@echo "make bench  - run the benchmarks (JSON lines on stdout)"
	@echo "make bench-peer - Tandem side by side with vLLM's CPU server (installs it in .venv-peer)"
	@echo "make eval-check - lm-evaluation-harness against Tandem equals its hf model (installs it in .venv-eval)"
	@echo "make openapi - regenerate router/http/openapi.json from the request models"

setup: $(STAMP)/project redis

$(STAMP)/venv:
	$(PYTHON_BOOT) -m venv $(VENV)
	mkdir -p $(STAMP) && touch $@

# The CPU torch wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP)/torch: $(STAMP)/venv
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_PIN)
	touch $@

$(STAMP)/project: $(STAMP)/torch pyproject.toml requirements/lmcache-cpu.txt
	$(PIP) install -e ".[dev]" -r requirements/lmcache-cpu.txt --config-settings editable_mode=compat
	$(PIP) install --no-deps $(LMCACHE_PIN)
	touch $@

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: install it with 'sudo apt-get install redis-server'" >&2; exit 1; \
	  fi; }

run: setup
	$(VENV)/bin/tandem serve

test: setup
	$(PY) -m pytest -q --durations=25

bench: setup
	$(PY) -m benchmarks

# Side by side with vLLM's CPU build (installed into its own .venv-peer, ~1 GB, once); the
# full grid takes 30-40 min. Pass options with BENCH_PEER_ARGS, e.g.
#   make bench-peer BENCH_PEER_ARGS="--num-prompts 20 --rates 2,inf --reps 1 --skip-offline"
BENCH_PEER_ARGS ?=
bench-peer: setup
	$(PY) -m benchmarks.vs_vllm $(BENCH_PEER_ARGS)

# lm-evaluation-harness against `tandem serve` vs its hf model (installs lm-eval in .venv-eval).
eval-check: setup
	$(PY) -m benchmarks.lm_eval_check $(EVAL_CHECK_ARGS)

openapi: setup   # regenerate router/http/openapi.json from the request models (a test checks it)
	$(PY) -m router.http.openapi

protos: setup
	$(PY) -m protos.build

lint: setup
	$(PY) -m compileall -q engine kv_transfer cluster router prefill_worker decode_worker

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
