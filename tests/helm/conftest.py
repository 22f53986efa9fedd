"""Fixtures of the chart tests: each values fixture goes through the whole pipeline once."""
from __future__ import annotations

import pytest

import helm_pipeline as hp
from helm_pipeline import VALUE_SETS


@pytest.fixture(scope="session")
def releases() -> dict[str, hp.Rendered]:
    """Every value set linted, schema-checked, rendered and validated (once per session)."""
    return {name: hp.run(hp.CHART_DIR, hp.load_values(name)) for name in VALUE_SETS}


@pytest.fixture(scope="session")
def merged_values() -> dict[str, dict]:
    """Each value set merged over the chart's defaults, as Helm coalesces them."""
    import helm_python as helm

    with helm.Chart.load(str(hp.CHART_DIR)) as chart:
        return {name: chart.merge_values(hp.load_values(name)) for name in VALUE_SETS}
