"""Placement planning: worker cost profiles, a simulator of the serving path, and the search
over layouts (``tandem profile``, ``tandem plan``). Torch-free."""
