"""certd: a daemon that owns a host's X.509 certificates."""

__version__ = "0.1.0"
