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
from benchmark.model_access import SIMULATION, ModelServices, model_upstreams, trial_route
from benchmark.providers import Provider
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
    local = {"local": Provider(protocol="openai-responses", base_url="http://127.0.0.1:8000/v1/")}
    assert model_upstreams([keys("codex", "local/qwen/qwen3-coder")], AGENTS, {}, local) == {
        "local/qwen/qwen3-coder": "local: http://127.0.0.1:8000"}


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


PROVIDERS = {"local": Provider(protocol="openai-chat", base_url="http://127.0.0.1:8000/v1"),
             "gw": Provider(protocol="anthropic-messages", base_url="https://gw.example", key_env="GW_KEY")}


@pytest.mark.parametrize("agent, model, message", [
    ("codex", "local/qwen3", "--model local/qwen3: provider local speaks openai-chat, agent codex speaks openai-responses"),
    ("claude-code", "gw/claude-x", "--model gw/claude-x: provider gw takes its key from GW_KEY: set it"),
    ("claude-code", "vllm/qwen3", "--model vllm/qwen3: unknown provider 'vllm' (declare [providers.vllm]"),
    ("claude-code", "openai/gpt-5", "--model openai/gpt-5: provider openai speaks openai-responses and openai-chat, agent claude-code speaks anthropic-messages"),
    ("claude-code", "gw/", "--model gw/: no model name after the provider gw/"),
])
def test_provider_errors_are_one_line(agent, model, message):
    with pytest.raises(MarathonError) as err:
        model_upstreams([keys(agent, model)], AGENTS, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}, PROVIDERS)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_provider_routes():
    env = {"GW_KEY": "sk-gw", "OPENAI_API_KEY": "sk-o"}
    route = trial_route(keys("claude-code", "gw/claude-x"), AGENTS["claude-code"], PROVIDERS, env)
    assert (route.provider, route.protocol, route.upstream_model, route.base_url, route.key_env) == \
        ("gw", "anthropic-messages", "claude-x", "https://gw.example", "GW_KEY")
    route = trial_route(keys("codex", "openai/gpt-5"), AGENTS["codex"], PROVIDERS, env)
    assert (route.provider, route.upstream_model, route.base_url) == ("openai", "gpt-5", "https://api.openai.com")
    route = trial_route(keys("codex", "scripted/oracle"), AGENTS["codex"], PROVIDERS, {})
    assert route.simulated and route.upstream_model == "scripted/oracle"


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


def test_each_trial_gets_its_own_socket_alone_in_its_own_directory(tmp_path):
    trials = [keys("claude-code", "scripted/oracle"), keys("codex", "scripted/nop")]
    services = ModelServices.start("test-run", tmp_path, "ledger", trials, environ={})
    socket_dir = services.socket_dir
    try:
        assert list(socket_dir.iterdir()) == []
        a, b = (services.open_trial(t) for t in trials)
        assert a.socket_dir.parent == b.socket_dir.parent == socket_dir and a.socket_dir != b.socket_dir
        for endpoint in (a, b):
            assert [p.name for p in endpoint.socket_dir.iterdir()] == [PROXY_SOCKET]
            mode = (endpoint.socket_dir / PROXY_SOCKET).stat().st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
            assert len(str(endpoint.socket_dir / PROXY_SOCKET).encode()) < 108
            assert endpoint.base_url == PROXY_URL and endpoint.token.get_secret_value().startswith("mt-")
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(endpoint.socket_dir / PROXY_SOCKET))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200") and b"marathon metering proxy" in data
        assert set(services.proxy.config.upstreams) == {"scripted"}
        # the trial's registration: its protocol, provider and model only
        reg = services.proxy._tokens[a.token.get_secret_value()]
        assert (reg.protocol, reg.upstream, reg.models) == ("anthropic-messages", "scripted", ["scripted/oracle"])
        services.close_trial(a)  # the trial ended: its socket and directory are gone
        assert not a.socket_dir.exists() and b.socket_dir.exists()
        with pytest.raises(OSError):
            socket.socket(socket.AF_UNIX).connect(str(a.socket_dir / PROXY_SOCKET))
    finally:
        services.stop()
    assert not socket_dir.exists()


def test_a_real_model_goes_to_its_vendor_with_the_key_from_the_environment(tmp_path):
    env = {"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": "https://gateway.example/"}
    services = ModelServices.start("test-real", tmp_path, "ledger",
                                   [keys("claude-code", "claude-sonnet-4-5")], environ=env)
    try:
        config = services.proxy.config
        assert services.scripted is None and set(config.upstreams) == {"anthropic"}
        assert config.upstreams["anthropic"].base_url == "https://gateway.example"
        assert config.upstreams["anthropic"].api_key.get_secret_value() == "sk-ant-test"
        assert "sk-ant-test" not in repr(config)  # the key is a secret, never printed
    finally:
        services.stop()
