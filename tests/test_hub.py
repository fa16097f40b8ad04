"""Offline hub detection: no ~30 s of download retries when the hub cannot be reached."""

import socket

import pytest

from engine.errors import UserError
from engine.model.loading import hub


@pytest.fixture(autouse=True)
def _fresh_check():
    hub.hub_offline.cache_clear()
    yield
    hub.hub_offline.cache_clear()


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_is_offline_and_only_the_cache_is_asked(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert hub.hub_offline()
    with pytest.raises(UserError, match="not in the Hugging Face cache and the hub cannot be "
                                        "reached"):
        hub.hub_download("lpepino/no-such-repo-evening", "model.pt")


def test_hf_hub_offline_is_honoured_and_a_listening_hub_is_online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_offline()
    hub.hub_offline.cache_clear()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert not hub.hub_offline()
