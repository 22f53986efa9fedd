"""Live P/D rebalancing: switch pool workers between prefill and decode as the load shifts.

``policy`` decides (pure, torch-free, tested on readings), ``controller`` reads the
router's load reports and asks workers to switch (``cluster.flex_worker``)."""
