"""``python -m loadtest run|sweep|compare ...`` (the same as ``tandem bench ...``)."""
from __future__ import annotations

import argparse
import logging
import sys

from loadtest.cli import add_bench_subcommands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest",
                                     description="Tandem load tests (tandem bench)")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_bench_subcommands(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from loadtest.errors import LoadTestError
        if isinstance(exc, LoadTestError):
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
