"""netspectre: force every packet through Tor, fail closed, and prove nothing leaks."""

__version__ = "0.1.0"
