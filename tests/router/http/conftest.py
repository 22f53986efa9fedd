"""The HTTP tests share tests/router/frontdoor_helpers.py with the other front-door tests."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
