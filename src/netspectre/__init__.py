"""netspectre: force every packet through Tor, fail closed, and prove nothing leaks."""

__version__ = "0.1.0"

# The config file when --config is not given (here, so `--help` needs no config module).
DEFAULT_CONFIG = "/etc/netspectre/netspectre.toml"
