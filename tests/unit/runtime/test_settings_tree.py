"""The settings tree: one variable scheme, TRADING_<SECTION>__<FIELD>, for every
section (runtime.config.sections), and no old name left in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from gateway.config import GatewayOptions
from runtime.config import Settings, all_settings, env_prefix, sections, to_env
from services.analytics.settings import AnalyticsSettings, CorrelationSettings
from services.decision.settings import DecisionSettings, TrainingSettings
from services.identity.settings import IdentitySettings

ROOT = Path(__file__).resolve().parents[3]


def test_every_section_reads_its_own_prefix() -> None:
    tree = sections()
    assert {
        "",
        "postgres",
        "gateway",
        "identity",
        "decision",
        "decision.train",
        "analytics.correlation",
    } <= set(tree)
    for name, model in tree.items():
        if issubclass(model, BaseSettings):
            assert model.model_config.get("env_prefix") == env_prefix(name), name
            assert model.model_config.get("env_nested_delimiter") == "__", name
    assert env_prefix("") == "TRADING_" and env_prefix("decision.train") == "TRADING_DECISION__TRAIN__"


def test_every_setting_has_one_name_and_a_description() -> None:
    settings = list(all_settings())
    names = [s.env for s in settings]
    assert len(names) == len(set(names))
    for s in settings:
        assert s.env == env_prefix(s.section) + s.name.upper()
        assert s.field.description, f"{s.env} has no description (a docstring under the field)"
    # Filled in per process, never configured.
    assert ("kafka", "sasl_password") not in {(s.section, s.name) for s in settings}


def test_a_variable_sets_a_nested_service_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_DECISION__TRAIN__SEED", "99")
    monkeypatch.setenv("TRADING_DECISION__TRAIN__SYMBOLS", '["BTC-USD"]')
    monkeypatch.setenv("TRADING_DECISION__TRAIN_IF_MISSING", "false")
    monkeypatch.setenv("TRADING_ANALYTICS__CORRELATION__THRESHOLD", "0.5")
    monkeypatch.setenv("TRADING_ANALYTICS__QUERY_TIMEOUT_S", "7")
    monkeypatch.setenv("TRADING_IDENTITY__ACCESS_TOKEN_TTL_S", "600")
    monkeypatch.setenv("TRADING_GATEWAY__RATE_LIMIT_REQUESTS", "3")
    monkeypatch.setenv("TRADING_GATEWAY__CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("TRADING_MARKETDATA__FEED_SEED", "5")
    training = TrainingSettings()
    assert training.seed == 99 and training.symbols == ["BTC-USD"]
    # A section ignores its subsections' variables, and the root all sections'.
    assert DecisionSettings().train_if_missing is False
    assert CorrelationSettings().threshold == 0.5 and AnalyticsSettings().query_timeout_s == 7
    assert IdentitySettings().access_token_ttl_s == 600
    settings = Settings()
    assert settings.marketdata.feed_seed == 5
    # The gateway's section is read the same way as part of Settings and on its own.
    for gateway in (settings.gateway, GatewayOptions()):
        assert gateway.rate_limit_requests == 3
        assert gateway.cors_origins == ["https://a.example", "https://b.example"]


def test_the_old_names_set_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    old = "TRADING_" + "{}_{}"  # built here so the repository scan below does not find them
    monkeypatch.setenv(old.format("IDENTITY", "ACCESS_TOKEN_TTL_S"), "600")
    monkeypatch.setenv(old.format("DECISION", "TRAIN_SEED"), "99")
    monkeypatch.setenv(old.format("DECISION", "INFERENCE_BUDGET_MS"), "1")
    monkeypatch.setenv(old.format("ANALYTICS", "CORRELATION_THRESHOLD"), "0.5")
    assert (
        IdentitySettings().access_token_ttl_s == IdentitySettings.model_fields["access_token_ttl_s"].default
    )
    assert TrainingSettings().seed == TrainingSettings.model_fields["seed"].default
    assert (
        DecisionSettings().inference_budget_ms == DecisionSettings.model_fields["inference_budget_ms"].default
    )
    assert CorrelationSettings().threshold == CorrelationSettings.model_fields["threshold"].default


# Top-level section names: a TRADING_<SECTION>_... name in a file is meant as a setting.
_SECTION_NAMES = {name.split(".")[0].upper() for name in sections() if name}
# Names that only look like one: a test's own variable for the TypeScript client.
_NOT_SETTINGS = {"TRADING_CLIENT_ORDER_ID"}


def test_no_file_names_a_setting_that_does_not_exist() -> None:
    """Every TRADING_<SECTION>_... name in the repository (deploy, compose,
    docs, tests, tools, the code) is a setting of the tree, or a prefix of
    some (``TRADING_ANALYTICS__EVALUATION_*``)."""
    known = {s.env for s in all_settings()}
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    bad: list[str] = []
    for rel in files:
        path = ROOT / rel
        if not rel or rel.startswith(("gen/", "clients/typescript")) or not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for match in re.finditer(r"\bTRADING_([A-Z0-9]+)(_[A-Z0-9_]*)?(\*)?", text):
            name, section = match.group(0), match.group(1)
            if section not in _SECTION_NAMES or name in _NOT_SETTINGS:
                continue
            if name in known or any(env.startswith(name.rstrip("*")) for env in known if match.group(3)):
                continue
            if name.endswith("__") and any(env.startswith(name) for env in known):
                continue
            bad.append(f"{rel}: {name}")
    assert not bad, "names that are not settings (docs/settings.md):\n" + "\n".join(bad)


def test_a_child_process_gets_the_gateway_section_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """tools.supervisor hands Settings to its children as variables (to_env):
    the gateway's request options travel with it, lists in their JSON form."""
    settings = Settings()
    settings.gateway.cors_origins = ["https://a.example"]
    settings.gateway.rate_limit_requests = 1_000_000_000
    settings.marketdata.feed_symbols = ["BTC-USD", "ETH-USD"]
    for key, value in to_env(settings).items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings
    assert GatewayOptions().model_dump() == settings.gateway.model_dump()
