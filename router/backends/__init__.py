"""Backend implementations. ``local``: one in-process engine (colocated mode)."""
