"""Shared by the playground's AppTest modules (tests/test_playground_pages.py and the modules that
use its helpers): the `env` fixture, a playground whose Conductor is tests/playground_fakes.py's,
with no provider key or config file from the machine. A pytest plugin (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st

import tests.playground_fakes as fakes  # the same module object the app imports
from conductor_core.providers.spec import provider_variables
from playground import state as playground_state
from playground.state import FACTORY_ENV

__all__ = ["KEY_VARS", "env", "settle_workers"]

KEY_VARS = (
    *provider_variables(),  # every provider's key and base URL (their specs)
    "CONDUCTOR_CONFIG",
    "CONDUCTOR_DATABASE_URL",
)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONDUCTOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(FACTORY_ENV, "tests.playground_fakes:build_conductor")
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env or conductor.toml
    st.cache_resource.clear()  # a fresh Conductor (and fresh fakes) for every test
    yield tmp_path
    if fakes.CONDUCTORS:  # answers still streaming finish before their Conductor closes
        settle_workers()
    st.cache_resource.clear()
    while fakes.CONDUCTORS:
        fakes.CONDUCTORS.pop().close()


def settle_workers(timeout: float = 30.0) -> None:
    """Until every answer this process streams has ended."""
    assert playground_state.worker().wait_all(timeout), "an answer did not finish in time"
