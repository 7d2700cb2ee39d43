"""The bottom layer: domain types, settings, storage, status, logs and the strict option types.

Nothing here imports any other first-party folder (tests/test_layers.py)."""
