"""``rebalance:``, the live P/D rebalancing controller's settings (``cluster.rebalance``).

Off by default: docs/rebalancing.md says what was measured and when to turn it on.
"""
from __future__ import annotations

from dataclasses import dataclass

from tandem_common.config import ConfigError, ge, gt, setting


@dataclass(slots=True)
class RebalanceConfig:
    # True: pool workers can switch between prefill and decode (``cluster.flex_worker``) and
    # the router runs the controller. Disaggregated mode only.
    enabled: bool = False
    interval_s: float = setting(1.0, gt(0))        # how often the controller reads the load reports
    # A pool's pressure: prefill = estimated prefill queue time / slo.ttft_ms; decode = the
    # larger of (recent engine step / slo.tpot_ms) and (KV use / kv_high). A worker moves from
    # the calm pool to the pressed one when one is >= high and the other <= low ...
    high: float = setting(1.0, gt(0))
    low: float = setting(0.5, ge(0))
    sustain: int = setting(2, ge(1))               # ... for this many readings in a row,
    cooldown_s: float = setting(10.0, ge(0))       # no sooner than this after the last switch,
    min_dwell_s: float = setting(30.0, ge(0))      # nor within this of that worker's own last switch
    kv_high: float = setting(0.9, gt(0))           # the KV use that counts as full decode pressure
    min_prefill: int = setting(1, ge(1))           # never fewer workers in a role than these
    min_decode: int = setting(1, ge(1))

    def check(self, path: str) -> None:
        if self.low >= self.high:
            raise ConfigError(f"{path}.low", f"must be < {path}.high ({self.high}), got {self.low}")
        if self.kv_high > 1:
            raise ConfigError(f"{path}.kv_high", f"must be <= 1, got {self.kv_high}")
