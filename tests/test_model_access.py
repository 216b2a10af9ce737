"""Model access without Docker: which upstream serves each model, the one-line errors raised
before anything starts, and the proxy's Unix socket for trial containers."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from rich.console import Console

from benchmark.agents import get_agent
from benchmark.driver import start_run
from benchmark.errors import MarathonError
from benchmark.experiment import load_config
from benchmark.model_access import SIMULATION, ModelServices, model_upstreams
from benchmark.records import TrialKeys
from benchmark.sandbox import PROXY_SOCKET, PROXY_URL

QUIET = Console(file=open(os.devnull, "w"))
AGENTS = {n: get_agent(n) for n in ("claude-code", "codex", "oracle")}


def keys(agent: str, model: str) -> TrialKeys:
    return TrialKeys(run_id="r", trial_id=f"t.{agent}.{model}", marathon="ledger", arm="prompt-only",
                     agent=agent, model=model, effort="default", replicate=1, seed=1)


def test_scripted_models_are_simulations_and_real_ones_go_to_their_vendor():
    trials = [keys("claude-code", "scripted/forgetful"), keys("claude-code", "claude-sonnet-4-5"),
              keys("codex", "gpt-5-codex"), keys("oracle", "none")]
    env = {"ANTHROPIC_API_KEY": "sk-a", "OPENAI_API_KEY": "sk-o",
           "OPENAI_BASE_URL": "https://gateway.example/v1/"}
    assert model_upstreams(trials, AGENTS, env) == {
        "scripted/forgetful": SIMULATION, "claude-sonnet-4-5": "https://api.anthropic.com",
        "gpt-5-codex": "https://gateway.example"}


@pytest.mark.parametrize("agent, model, env, message", [
    ("claude-code", "claude-sonnet-4-5", {"OPENAI_API_KEY": "x"},
     "--model claude-sonnet-4-5: agent claude-code calls the Anthropic API: set ANTHROPIC_API_KEY"),
    ("codex", "gpt-5-codex", {"ANTHROPIC_API_KEY": "x"},
     "--model gpt-5-codex: agent codex calls the OpenAI API: set OPENAI_API_KEY"),
    ("codex", "scripted/genius", {}, "--model scripted/genius: unknown scripted model"),
])
def test_model_access_errors_are_one_line(agent, model, env, message):
    with pytest.raises(MarathonError) as err:
        model_upstreams([keys(agent, model)], AGENTS, env)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("flags, message", [
    ({"agents": ("claude-code",)}, "--model: agent 'claude-code' needs a model"),
    ({"agents": ("claude-code",), "models": ("claude-sonnet-4-5",)}, "set ANTHROPIC_API_KEY"),
    ({"agents": ("oracle",), "episodes": 9}, "--episodes: marathon ledger has 4 episodes, got 9"),
])
def test_bad_model_settings_fail_before_anything_is_written(tmp_path, monkeypatch, flags, message):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = load_config(None, {"marathon": "ledger", "arms": ("prompt-only",), "out": tmp_path,
                                "run_id": "bad", **flags})
    with pytest.raises(MarathonError, match=message.replace("(", r"\(")):
        start_run(config, display=False, console=QUIET)
    assert not (tmp_path / "bad").exists()


def test_the_proxy_listens_on_a_socket_alone_in_its_directory(tmp_path):
    services = ModelServices.start("test-run", tmp_path, "ledger",
                                   {"scripted/oracle": SIMULATION}, set(), environ={})
    socket_dir = services.socket_dir
    try:
        assert [p.name for p in socket_dir.iterdir()] == [PROXY_SOCKET]
        mode = (socket_dir / PROXY_SOCKET).stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
        endpoint = services.open_trial(keys("claude-code", "scripted/oracle"))
        assert endpoint.base_url == PROXY_URL and endpoint.token.get_secret_value().startswith("mt-")
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(socket_dir / PROXY_SOCKET))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"marathon metering proxy" in data
        assert services.proxy.config.anthropic is None and services.proxy.config.openai is None
    finally:
        services.stop()
    assert not socket_dir.exists()


def test_a_real_model_goes_to_its_vendor_with_the_key_from_the_environment(tmp_path):
    env = {"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": "https://gateway.example/"}
    upstreams = model_upstreams([keys("claude-code", "claude-sonnet-4-5")], AGENTS, env)
    services = ModelServices.start("test-real", tmp_path, "ledger", upstreams, {"anthropic"}, env)
    try:
        config = services.proxy.config
        assert services.scripted is None and config.simulated is None and config.openai is None
        assert config.anthropic.base_url == "https://gateway.example"
        assert config.anthropic.api_key.get_secret_value() == "sk-ant-test"
        assert "sk-ant-test" not in repr(config)  # the key is a secret, never printed
    finally:
        services.stop()
