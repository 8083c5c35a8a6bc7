"""Shared test setup: guard against float64 mode leaking out of a test."""

import jax
import pytest


@pytest.fixture(autouse=True)
def _no_x64_leak():
    yield
    assert not jax.config.jax_enable_x64, "a test left jax_enable_x64 on"
