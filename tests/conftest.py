"""Servers the tests talk to over HTTP, shared by every test module.

Each is started once per module that asks for it (module scope), as before
these fixtures were collected here.
"""

from __future__ import annotations

import pytest

from automation.localaws import moto_server
from tests._kube_emulator import KubeEmulator


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
