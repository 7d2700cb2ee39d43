"""dropbatch: a folder drop becomes chunked, parallel GPU work (crop → swap → lipsync)."""

__version__ = "0.1.0"
