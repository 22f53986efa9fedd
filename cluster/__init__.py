"""Cluster side of Tandem: the typed config, Ray bootstrap, pools and the ``tandem`` CLI."""
