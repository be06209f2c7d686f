"""AWS settings for tests that talk to the local moto server."""

from __future__ import annotations


def use_dummy_aws_credentials(monkeypatch, *unset: str) -> None:
    """Keys that reach only the local moto server; no profile or config file of the machine leaks in."""
    for key in ("AWS_PROFILE", *unset):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/kiln-test-aws-config")
