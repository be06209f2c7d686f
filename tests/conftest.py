"""Servers the tests talk to over HTTP, shared by every test module.

Each is started once per module that asks for it (module scope), as before
these fixtures were collected here.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from automation.localaws import moto_server
from tests._kube_emulator import KubeEmulator
from _program_helpers import _run_cached, mapping_for_mutmut  # (as the tests import it: one module, one cache)

# mutmut (make mutate) forks a child per mutant from a process that already ran the suite once. The child
# inherits the event loop the Pulumi mocks ran on, whose default executor believes its worker threads
# exist — they do not after a fork — so the program's first run_in_executor waits forever. A fresh loop
# in the child runs the program as the parent did. (Plain pytest and xdist never fork: no effect there.)
os.register_at_fork(after_in_child=lambda: asyncio.set_event_loop(asyncio.new_event_loop()))


@pytest.fixture(scope="module")
def moto_url():
    """A moto server on 127.0.0.1 (AWS over HTTP); its URL."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def kube_server():
    """The Kubernetes API emulator (kmock) the official client talks to."""
    emulator = KubeEmulator()
    yield emulator
    emulator.close()


@pytest.fixture(autouse=True)
def _program_runs_mapped_per_test():
    """While mutmut maps tests to code, no test answers from another test's program run (see program_scope)."""
    if mapping_for_mutmut():
        _run_cached.cache_clear()
    yield
