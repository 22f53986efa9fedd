"""A live one-line progress display of a run, on stderr."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from loadtest.runner import Runner


class ProgressBar:
    """Redraws ``[#####-----] 42/100 req | ok 40 | failed 2 | in flight 3 | 12.1/60 s``.

    On a terminal the line is redrawn in place; otherwise a line is printed every
    ``plain_every_s`` seconds so logs stay readable.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30,
                 plain_every_s: float = 10.0, label: str = "") -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_every_s = plain_every_s
        self.label = label
        self._last_plain = 0.0

    def line(self, runner: Runner) -> str:
        limits = runner.limits
        counts = runner.finished_counts()
        ok = counts.get("ok", 0)
        failed = sum(counts.values()) - ok
        fraction = max(runner.sent / limits.max_requests,
                       min(1.0, runner.elapsed_s / limits.max_duration_s))
        filled = int(round(self.width * min(1.0, fraction)))
        bar = "#" * filled + "-" * (self.width - filled)
        prefix = f"{self.label} " if self.label else ""
        return (f"{prefix}[{bar}] {runner.sent}/{limits.max_requests} req | ok {ok} | "
                f"failed {failed} | in flight {runner.inflight} | "
                f"{runner.elapsed_s:.1f}/{limits.max_duration_s:g} s")

    def __call__(self, runner: Runner) -> None:
        text = self.line(runner)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
        elif time.monotonic() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
