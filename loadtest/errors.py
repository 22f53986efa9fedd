"""Typed errors of the load-test harness.

Bad input (a spec string, a trace file, an option) raises a ``ValueError`` subclass with a
message naming what is wrong, so the CLI prints it and exits 2. A request that fails
during a run is never an exception: it is a ``RequestRecord`` with a status.
"""
from __future__ import annotations


class LoadTestError(Exception):
    """Base of the harness's errors."""


class SpecError(LoadTestError, ValueError):
    """A distribution, arrival or workload specification is malformed."""


class TraceError(LoadTestError, ValueError):
    """A trace file is missing, unreadable or has a malformed row (named in the message)."""


class TargetError(LoadTestError):
    """The target cannot be reached or described (before any load is sent)."""


class ReportError(LoadTestError, ValueError):
    """A result file cannot be read or is not a ``tandem bench`` result."""
