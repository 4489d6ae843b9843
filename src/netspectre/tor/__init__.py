"""Tor: torrc rendering, the managed tor process and its supervisor, the control protocol."""
