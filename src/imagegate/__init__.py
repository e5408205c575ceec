"""imagegate: a self-hosted image-generation service speaking the Weave trace-server API."""

__version__ = "0.1.0"
