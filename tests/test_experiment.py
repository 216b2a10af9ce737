"""Run configuration: flags and experiment files, trial planning, paired seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import MarathonError
from benchmark.experiment import derive_seed, load_config, plan_trials


def test_seed_depends_on_base_and_replicate_only():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, r) for r in range(1, 50)}) == 49
    assert derive_seed(1, 1) != derive_seed(0, 1)
    assert 0 <= derive_seed(7, 3) < 2**31


def test_arms_share_seeds_per_replicate():
    config = load_config(None, {"marathon": "ledger", "arms": ("prompt-only", "feedback-retry"),
                                "agents": ("oracle", "nop"), "replicates": 3})
    trials = plan_trials(config, "run", "ledger", {"oracle": False, "nop": False})
    assert len(trials) == 2 * 2 * 3
    assert len({t.trial_id for t in trials}) == len(trials)
    for r in (1, 2, 3):
        seeds = {t.seed for t in trials if t.replicate == r}
        assert seeds == {derive_seed(0, r)}
    assert all(t.model == "none" and t.effort == "none" for t in trials)
    assert [t.replicate for t in trials] == sorted(t.replicate for t in trials)  # replicate-major


def test_flags_override_the_experiment_file(tmp_path: Path):
    f = tmp_path / "exp.toml"
    f.write_text('marathon = "ledger"\narms = ["prompt-only"]\nagents = ["oracle"]\n'
                 'replicates = 4\njobs = 2\nout = "runs"\ntime_limit_s = 60\n')
    config = load_config(f, {"replicates": 2, "arms": ()})
    assert config.replicates == 2 and config.jobs == 2 and config.arms == ["prompt-only"]
    assert config.out == (tmp_path / "runs").resolve() and config.time_limit_s == 60


@pytest.mark.parametrize("text, overrides, expected", [
    ('marathon = "ledger"\narms = ["a"]\nagents = ["oracle"]\nreplicates = 0\n', {}, "exp.toml: replicates: Input should be greater than or equal to 1"),
    ('marathon = "ledger"\narms = ["a"]\nagents = ["oracle"]\n', {"replicates": 0}, "--replicates: Input should be greater than or equal to 1"),
    ('marathon = "ledger"\narms = ["a"]\nagents = ["oracle"]\n', {"jobs": 0}, "--jobs:"),
    ('marathon = "ledger"\narms = ["a"]\nagents = ["oracle"]\n', {"time_limit_s": -1.0}, "--time-limit:"),
    ('marathon = "ledger"\nagents = ["oracle"]\n', {}, "arms: required (give --arm or set arms in -c FILE)"),
    ('marathon = "ledger"\narms = ["a"]\nagents = ["oracle"]\nreplicas = 2\n', {}, "exp.toml: replicas: Extra inputs are not permitted"),
    ('marathon = "ledger"\narms = [\n', {}, "exp.toml: malformed TOML"),
])
def test_bad_config_names_file_or_flag(tmp_path: Path, text: str, overrides: dict, expected: str):
    f = tmp_path / "exp.toml"
    f.write_text(text)
    with pytest.raises(MarathonError) as err:
        load_config(f, overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_models_for_agents_without_one_are_refused():
    config = load_config(None, {"marathon": "ledger", "arms": ("prompt-only",), "agents": ("oracle",),
                                "models": ("scripted/echo",)})
    with pytest.raises(MarathonError, match="--model: agents oracle use no model"):
        plan_trials(config, "run", "ledger", {"oracle": False})


def test_model_agents_cross_models_and_efforts():
    config = load_config(None, {"marathon": "ledger", "arms": ("prompt-only",), "agents": ("cli", "oracle"),
                                "models": ("scripted/a", "m-b"), "effort": ("low", "high")})
    trials = plan_trials(config, "run", "ledger", {"cli": True, "oracle": False})
    assert len(trials) == 4 + 1
    assert {t.trial_id for t in trials if t.agent == "cli"} == {
        "prompt-only.cli.scripted-a.low.r1", "prompt-only.cli.scripted-a.high.r1",
        "prompt-only.cli.m-b.low.r1", "prompt-only.cli.m-b.high.r1"}


def test_example_experiment_loads():
    from benchmark.arms import load_arm

    root = Path(__file__).parents[1]
    config = load_config(root / "experiment.toml", {})
    assert config.out == (root / "results").resolve()
    for arm in config.arms:
        load_arm(arm)
    # the main job: the real Claude Code CLI against the scripted (simulated) model
    assert config.agents == ["claude-code"] and config.models == ["scripted/forgetful"]
    trials = plan_trials(config, "run", "ledger", {"claude-code": True})
    assert len(trials) == 4 * 2 and {t.model for t in trials} == {"scripted/forgetful"}
    smoke = load_config(root / "experiment-smoke.toml", {})
    every = sorted(p.parent.name for p in (root / "episodes").glob("*/marathon.toml"))
    assert sorted(smoke.marathons) == every  # the smoke run covers every marathon of the suite
    trials = plan_trials(smoke, "run", smoke.marathons, {"oracle": False, "nop": False})
    assert len(trials) == len(every) * 4 * 2 * 2


def test_suite_and_modes_are_planned_with_readable_unique_ids(tmp_path: Path):
    f = tmp_path / "exp.toml"
    f.write_text('marathons = ["ledger", "relay"]\nmode = "both"\narms = ["prompt-only"]\n'
                 'agents = ["oracle"]\nreplicates = 2\n')
    config = load_config(f, {})
    trials = plan_trials(config, "run", ["ledger", "relay"], {"oracle": False})
    assert len(trials) == 2 * 2 * 2 and len({t.trial_id for t in trials}) == 8
    assert "relay.prompt-only.oracle.none.none.r2.isolated" in {t.trial_id for t in trials}
    assert {(t.marathon, t.mode) for t in trials} == {
        (m, mode) for m in ("ledger", "relay") for mode in ("cumulative", "isolated")}
    for r in (1, 2):  # one seed per replicate across marathons and modes
        assert len({t.seed for t in trials if t.replicate == r}) == 1
    # one marathon, cumulative: the plain ids of earlier harness versions
    one = load_config(None, {"marathon": "ledger", "arms": ("prompt-only",), "agents": ("oracle",)})
    assert one.marathons == ["ledger"] and one.mode == "cumulative"
    assert [t.trial_id for t in plan_trials(one, "run", "ledger", {"oracle": False})] == [
        "prompt-only.oracle.none.none.r1"]
    # flags replace the file's marathons; the old key still reads
    assert load_config(f, {"marathons": ("relay",)}).marathons == ["relay"]
    f.write_text('marathon = "ledger"\narms = ["a"]\nagents = ["oracle"]\n')
    assert load_config(f, {}).marathons == ["ledger"]


@pytest.mark.parametrize("text, overrides, expected", [
    ('marathon = "ledger"\nmarathons = ["relay"]\narms = ["a"]\nagents = ["oracle"]\n', {},
     "give marathon or marathons, not both"),
    ('marathons = ["ledger", "ledger"]\narms = ["a"]\nagents = ["oracle"]\n', {},
     "exp.toml: marathons: marathon 'ledger' given twice"),
    ('marathons = ["ledger"]\narms = ["a"]\nagents = ["oracle"]\n', {"mode": "sideways"},
     "--mode: Input should be 'cumulative', 'isolated' or 'both'"),
])
def test_bad_suite_config(tmp_path: Path, text: str, overrides: dict, expected: str):
    f = tmp_path / "exp.toml"
    f.write_text(text)
    with pytest.raises(MarathonError, match=expected):
        load_config(f, overrides)


BASE = 'marathon = "ledger"\narms = ["a"]\nagents = ["oracle"]\n'


@pytest.mark.parametrize("table, expected", [
    ('protocol = "openai-chatt"\nbase_url = "http://h:1/v1"\n',
     "exp.toml: providers.local.protocol: Input should be 'anthropic-messages', 'openai-responses' or 'openai-chat'"),
    ('protocol = "openai-chat"\n', "exp.toml: providers.local.base_url: Field required"),
    ('protocol = "openai-chat"\nbase_url = "ftp://h/v1"\n', "exp.toml: providers.local.base_url: String should match"),
    ('protocol = "openai-chat"\nbase_url = "http://h:1"\nkey_env = "MY KEY"\n', "exp.toml: providers.local.key_env: String should match"),
    ('protocol = "openai-chat"\nbase_url = "http://h:1"\napi_key = "sk-x"\n', "exp.toml: providers.local.api_key: Extra inputs are not permitted"),
])
def test_bad_provider_tables_name_file_and_field(tmp_path: Path, table: str, expected: str):
    f = tmp_path / "exp.toml"
    f.write_text(BASE + "[providers.local]\n" + table)
    with pytest.raises(MarathonError) as err:
        load_config(f, {})
    assert str(err.value).startswith(str(f)) and expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, expected", [
    ("openai", "providers: provider 'openai' is built in"),
    ("scripted", "providers: provider 'scripted' is built in"),
    ('"a/b"', "providers: provider name 'a/b'"),
])
def test_provider_names_that_cannot_be_declared(tmp_path: Path, name: str, expected: str):
    f = tmp_path / "exp.toml"
    f.write_text(BASE + f'[providers.{name}]\nprotocol = "openai-chat"\nbase_url = "http://h:1"\n')
    with pytest.raises(MarathonError) as err:
        load_config(f, {})
    assert f"exp.toml: {expected}" in str(err.value) and "\n" not in str(err.value)


def test_a_provider_table_loads(tmp_path: Path):
    f = tmp_path / "exp.toml"
    f.write_text(BASE + '[providers.local]\nprotocol = "openai-chat"\nbase_url = "http://127.0.0.1:8000/v1"\n'
                 '[providers.gw]\nprotocol = "anthropic-messages"\nbase_url = "https://gw.example"\n'
                 'key_env = "GW_KEY"\n')
    config = load_config(f, {})
    assert config.providers["local"].key_env is None and config.providers["gw"].key_env == "GW_KEY"
    assert config.providers["gw"].protocol == "anthropic-messages"
