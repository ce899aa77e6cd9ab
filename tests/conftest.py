"""Shared test set-up."""

import pytest
import torch as th

# The models in tests are tiny: one thread is faster than several and keeps parallel jobs from oversubscribing the CPU.
th.set_num_threads(1)


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """The compiled RIMs kernel's loader as in a new process, with an empty cache (tmp_path / "cache")."""
    from rims_rl.nn import rims_native

    monkeypatch.setitem(rims_native._state, "lib", None)
    monkeypatch.setitem(rims_native._state, "tried", False)
    monkeypatch.setitem(rims_native._state, "reason", "")
    monkeypatch.setenv("RIMS_RL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(rims_native.DISABLE_ENV, raising=False)
    return tmp_path / "cache"
