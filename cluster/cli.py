"""The ``tandem`` command line.

``tandem run``      - generate offline on a model and print text and timings.
``tandem serve``    - start a cluster; ``tandem generate`` / ``tandem status`` talk to one.
``tandem bench``    - load-test a cluster or any OpenAI-compatible endpoint (loadtest/).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "The little dog was sad because"]


def _cmd_run(args: argparse.Namespace) -> int:
    from engine import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=args.model, dtype=args.dtype, device=args.device, num_threads=args.threads)
    load_s = time.perf_counter() - t0
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    prompts = args.prompt or DEFAULT_PROMPTS
    t1 = time.perf_counter()
    outputs = llm.generate(prompts, params)
    gen_s = time.perf_counter() - t1
    n_tokens = sum(len(o.token_ids) for o in outputs)
    for prompt, out in zip(prompts, outputs):
        print(f"\n>>> {prompt}\n{prompt}{out.text}\n[{len(out.token_ids)} tokens, "
              f"finish={out.finish_reason}, ttft={1000 * (out.ttft_s or 0):.1f} ms]")
    print(f"\nmodel {args.model}: loaded in {load_s:.2f}s; {len(prompts)} prompts, {n_tokens} tokens "
          f"in {gen_s:.2f}s ({n_tokens / gen_s:.0f} tokens/s, batched)")
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate offline on a model (default: the embedded stories260K)")
    p.add_argument("prompt", nargs="*", help="prompts (default: three story openings)")
    p.add_argument("--model", default="stories260K", help="model directory, 'stories260K' or a preset name")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_cmd_run)


def _add_serving(sub: argparse._SubParsersAction) -> None:
    from cluster.cli_serving import add_commands
    add_commands(sub)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from loadtest.cli import add_commands
    add_commands(sub)


def _add_planner(sub: argparse._SubParsersAction) -> None:
    from cluster.cli_planner import add_commands
    add_commands(sub)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_run, _add_serving, _add_bench, _add_planner]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description="Tandem: disaggregated LLM serving")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from router.logging_context import configure_logging
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except ValueError as exc:   # bad input: a message and exit code 2, never a traceback
        print(f"tandem: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:   # typed errors from the SDK and the cluster carry a message
        from tandem_client.errors import TandemError
        if isinstance(exc, TandemError):
            print(f"tandem: {exc}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
