"""One spec per provider (providers/spec.py), read by everything that knows about providers:
the registry, Settings (the SDKs' own variables, in the environment, .env and conductor.toml),
provider names in requests, and each provider class's attributes. Reading them imports no SDK."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from conductor_core.config import load_settings
from conductor_core.models import ChatMessage, ChatRequest, known_provider_names
from conductor_core.providers import build_registry
from conductor_core.providers.spec import (
    BUILTIN_MODULES,
    FEATURE_SETTINGS,
    SAMPLING_SETTINGS,
    Capabilities,
    ModelSpec,
    ProviderSpec,
    provider_specs,
    provider_variables,
)

ROOT = Path(__file__).resolve().parent.parent
SDKS = ("anthropic", "openai", "google.genai", "llama_cpp")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in provider_variables():  # a developer's own keys never reach a test
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("CONDUCTOR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env or conductor.toml
    return tmp_path


def test_the_built_in_specs_in_display_order():
    specs = provider_specs()
    assert list(specs) == ["local", "gemini", "openai", "anthropic"]
    assert [s.module for s in specs.values()] == list(BUILTIN_MODULES)
    assert specs["gemini"].key_env_vars == ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    assert specs["gemini"].key_hint == "set GEMINI_API_KEY (or GOOGLE_API_KEY)"
    assert specs["openai"].key_hint == "set OPENAI_API_KEY"
    assert (specs["gemini"].key_setting, specs["gemini"].base_url_setting) == ("gemini_api_key", "gemini_base_url")
    assert specs["local"].key_setting is None and not specs["local"].needs_key


def test_each_provider_class_takes_its_attributes_from_its_spec():
    for spec in provider_specs().values():
        cls = spec.provider_class()
        assert cls.spec is spec
        assert cls.display_name == spec.display_name
        assert cls.key_env_var == (spec.key_env_vars[0] if spec.key_env_vars else None)
        assert cls.price_provider_id == spec.price_provider_id
        assert cls.supported_settings == spec.capabilities.settings()
        assert spec.default_model == spec.models[0].id  # offered first


def test_capabilities_name_the_request_settings_they_pass_on():
    specs = provider_specs()
    assert specs["openai"].capabilities.settings() == frozenset(SAMPLING_SETTINGS + FEATURE_SETTINGS)
    # anthropic 2.x: messages.create has stop_sequences and no other sampling parameter.
    assert specs["anthropic"].capabilities.sampling == {"stop"}
    anthropic = specs["anthropic"].capabilities
    assert {"tools", "tool_choice", "parallel_tool_calls", "response_format"} <= anthropic.settings()
    # The embedded model: every sampling setting and JSON (a llama.cpp grammar); no tools or images.
    local = specs["local"].capabilities
    assert local.settings() == frozenset({*SAMPLING_SETTINGS, "response_format"}) and not (local.tools or local.vision)
    assert local.structured_output == {"json_object", "json_schema"}
    gemini = specs["gemini"].capabilities
    assert gemini.tools and not gemini.parallel_tool_calls and not gemini.logprobs and gemini.seed
    with pytest.raises(ValueError, match="unknown sampling settings"):
        Capabilities(sampling=frozenset({"temperture"}))
    with pytest.raises(ValueError, match="need tools"):
        Capabilities(tool_choice=True)


def test_a_spec_refuses_what_would_break_later():
    def spec(**kw):
        values = dict(
            name="toy",
            display_name="Toy",
            module="m",
            class_name="C",
            default_model="a",
            models=(ModelSpec("a"),),
            capabilities=Capabilities(),
        )
        return ProviderSpec(**{**values, **kw})

    assert spec().key_setting is None
    with pytest.raises(ValueError, match="default model 'b' is not among"):
        spec(default_model="b")
    with pytest.raises(ValueError, match="listed twice"):
        spec(models=(ModelSpec("a"), ModelSpec("a")))
    with pytest.raises(ValueError, match="not 'auto'"):
        spec(name="auto")
    with pytest.raises(ValueError, match="not an environment variable"):
        spec(key_env_vars=("toy-key",))


def test_reading_the_specs_imports_no_sdk():
    # Importing an SDK costs seconds (anthropic ~2 s): a person without that provider's key
    # must not wait for it. Specs, Settings, provider names and a registry with no keys.
    code = (
        "import json, sys\n"
        "from conductor_core.providers.spec import provider_specs\n"
        "from conductor_core.config import load_settings\n"
        "from conductor_core.providers import build_registry\n"
        "from conductor_core.models import known_provider_names\n"
        "specs = provider_specs()\n"
        "registry = build_registry(load_settings(_env_file=None, local_enabled=False))\n"
        "names = known_provider_names()\n"
        f"print(json.dumps({{'loaded': [m for m in {SDKS!r} if m in sys.modules], 'names': names,"
        " 'unavailable': registry.unavailable}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["loaded"] == []
    assert found["names"] == ["auto", "local", "gemini", "openai", "anthropic"]
    assert found["unavailable"] == {
        "local": "set CONDUCTOR_LOCAL_ENABLED=true",
        "gemini": "set GEMINI_API_KEY (or GOOGLE_API_KEY)",
        "openai": "set OPENAI_API_KEY",
        "anthropic": "set ANTHROPIC_API_KEY",
    }


def test_settings_read_the_sdks_own_variables(clean_env, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "7ubPFtuUeAv5C7jRKoFZEc")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:1/gemini")
    monkeypatch.setenv("OPENAI_API_KEY", "FLqqv0Y77zGpsJHRfLf4wf")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1/anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")  # empty: not configured
    settings = load_settings()
    assert settings.provider_key("gemini").get_secret_value() == "7ubPFtuUeAv5C7jRKoFZEc"
    assert settings.provider_key("openai").get_secret_value() == "FLqqv0Y77zGpsJHRfLf4wf"
    assert settings.provider_key("anthropic") is None
    assert settings.provider_base_url("gemini") == "http://127.0.0.1:1/gemini"
    assert settings.provider_base_url("openai") == "http://127.0.0.1:1/v1"
    assert settings.provider_base_url("anthropic") == "http://127.0.0.1:1/anthropic"
    # The names from before specs still read, and GEMINI_API_KEY comes before GOOGLE_API_KEY.
    assert settings.gemini_base_url == "http://127.0.0.1:1/gemini" and settings.anthropic_api_key is None
    monkeypatch.setenv("GEMINI_API_KEY", "SSvxRGBh57RVOQTvTxjT7a")
    assert load_settings().gemini_api_key.get_secret_value() == "SSvxRGBh57RVOQTvTxjT7a"
    registry = build_registry(load_settings(local_enabled=False))
    assert registry.unavailable == {"local": "set CONDUCTOR_LOCAL_ENABLED=true", "anthropic": "set ANTHROPIC_API_KEY"}


def test_settings_from_dotenv_and_conductor_toml_with_the_environment_first(clean_env, monkeypatch):
    (clean_env / ".env").write_text("OPENAI_API_KEY=xIcFsaWhTaOKbSY9fNf3px\nANTHROPIC_BASE_URL=http://dotenv/\n")
    (clean_env / "conductor.toml").write_text(
        'gemini_api_key = "7xuVSWsqp5mDprTjZAMiPW"\nANTHROPIC_BASE_URL = "http://toml/"\nOPENAI_API_KEY = "Hqhwam2PsaegyoiPz3yVg7"\n'
    )
    settings = load_settings()
    assert settings.provider_key("openai").get_secret_value() == "xIcFsaWhTaOKbSY9fNf3px"  # .env before toml
    assert settings.provider_key("gemini").get_secret_value() == "7xuVSWsqp5mDprTjZAMiPW"  # the setting's name
    assert settings.provider_base_url("anthropic") == "http://dotenv/"
    monkeypatch.setenv("OPENAI_API_KEY", "lV4sdPioRd3EF42ANpuNns")
    assert load_settings().provider_key("openai").get_secret_value() == "lV4sdPioRd3EF42ANpuNns"
    assert load_settings(_env_file=None).provider_base_url("anthropic") == "http://toml/"  # .env skipped


def test_arguments_win_and_none_removes_what_a_variable_set(clean_env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "lV4sdPioRd3EF42ANpuNns")
    assert load_settings(openai_api_key=None).provider_key("openai") is None
    argument = load_settings(openai_api_key="o298TCQSV615B6obqxeQES")
    assert argument.openai_api_key.get_secret_value() == "o298TCQSV615B6obqxeQES"
    given = load_settings(provider_keys={"anthropic": "aai3FBUE4cSx9WS0R8enzq"}, anthropic_base_url="http://a/")
    assert given.provider_key("anthropic").get_secret_value() == "aai3FBUE4cSx9WS0R8enzq"
    assert given.provider_base_url("anthropic") == "http://a/"
    # A copy with a key (the playground: a key typed for one session); the old names work too.
    copy = given.with_api_key("gemini", "XS6GOjMgL7Xy1Zqkhm9jRn")
    assert copy.provider_key("gemini").get_secret_value() == "XS6GOjMgL7Xy1Zqkhm9jRn"
    assert given.provider_key("gemini") is None
    legacy = given.model_copy(update={"gemini_api_key": "5l06oPlJUonfUzkWgA3Icj"})
    assert isinstance(legacy.provider_key("gemini"), SecretStr)
    assert legacy.gemini_api_key.get_secret_value() == "5l06oPlJUonfUzkWgA3Icj"
    # Keys never show in a dump.
    assert "aai3FBUE4cSx9WS0R8enzq" not in given.model_dump_json() and "aai3FBUE4cSx9WS0R8enzq" not in repr(given)
    with pytest.raises(AttributeError):
        given.gemini_key  # noqa: B018 - not a setting


def test_provider_names_in_requests_come_from_the_specs():
    assert known_provider_names()[:5] == ["auto", *provider_specs()]
    with pytest.raises(ValidationError, match="available: auto, local, gemini, openai, anthropic"):
        ChatRequest(provider="gemnini", messages=[ChatMessage(role="user", content="hi")])


# --- model lists: current, with their retirement dates ---------------------------------------


def test_no_listed_or_default_model_is_past_its_retirement_date():
    # Today's date from the clock: the day a listed model retires, this fails, before a person
    # meets the provider's 404.
    today = date.today()
    for spec in provider_specs().values():
        retired = [(m.id, m.retires.isoformat()) for m in spec.retired_models(today) if m.retires]
        assert not retired, f"{spec.name} lists retired models {retired}: update SPEC in {spec.module}"
        assert not spec.model(spec.default_model).retired(today)


def test_a_model_past_its_date_counts_as_retired():
    model = ModelSpec("old-model", retires=date(2026, 11, 30))
    assert not model.retired(date(2026, 11, 29)) and model.retired(date(2026, 11, 30))
    assert not ModelSpec("current").retired(date(2099, 1, 1))


def _anthropic_table() -> dict[str, date]:
    from anthropic._data import DEPRECATED_MODELS

    def day(text: str) -> date:  # "November 30th, 2026"
        return datetime.strptime(re.sub(r"(\d)(st|nd|rd|th)", r"\1", text), "%B %d, %Y").date()

    return {model: day(when) for model, when in DEPRECATED_MODELS.items()}


def _openai_table() -> dict[str, date]:
    import openai.types.shared.chat_model as chat_model

    notes = Path(chat_model.__file__).read_text().split('"""Deprecated values:', 1)[1]
    table: dict[str, date] = {}
    for item in notes.split("\n- "):
        when = re.search(r"shutdown\s+date:\s+(\d{4}-\d{2}-\d{2})", item)
        if when:
            for model in re.findall(r'"([^"]+)"', item.split(":", 1)[0]):
                table[model] = date.fromisoformat(when.group(1))
    return table


@pytest.mark.parametrize(("provider", "table"), [("anthropic", _anthropic_table), ("openai", _openai_table)])
def test_the_dates_agree_with_the_pinned_sdks_own_deprecation_tables(provider, table):
    # anthropic ships a table (and warns on each call to a model in it); openai's ChatModel type
    # lists shutdown dates. A listed model the SDK dates must carry that date in our spec.
    known = table()
    assert known, f"the {provider} SDK's table was not found: did its layout change?"
    for model in provider_specs()[provider].models:
        assert model.retires == known.get(model.id), f"{model.id}: the {provider} SDK says {known.get(model.id)}"


def test_default_models_are_priced_by_genai_prices():
    from conductor_core.pricing import model_is_priced

    for spec in provider_specs().values():
        if spec.price_provider_id is not None:
            assert all(model_is_priced(m.id, spec.price_provider_id) for m in spec.models), spec.name


def test_python_m_conductor_core_providers_prints_every_spec():
    done = subprocess.run(
        [sys.executable, "-m", "conductor_core.providers"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    for spec in provider_specs().values():
        assert f"{spec.name} ({spec.display_name}): {spec.key_hint or 'no key'}" in done.stdout
        assert f"  {spec.default_model} (default" in done.stdout
        for model in spec.models:
            if model.retires:
                assert f"  {model.id} (retires {model.retires.isoformat()})" in done.stdout
