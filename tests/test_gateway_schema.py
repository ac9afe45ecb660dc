"""Schemathesis against the gateway's own /openapi.json: generated requests (valid and
invalid) to every operation, in front of scripted providers so it runs fast. No response
may be a 5xx, and every response must match the documented status codes, content types,
headers and schemas; the documented bearer key must really be enforced."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config._auth import OpenAPIAuthConfig

from conductor_core.config import load_settings
from conductor_core.providers.base import FEATURE_SETTINGS, SAMPLING_SETTINGS
from conductor_core.router import Conductor
from conductor_core.testing.fakes import ScriptedProvider
from gateway.main import create_app

# At least 32 characters: the ASGI client's address ("testserver") is not loopback.
GATEWAY_KEY = "sHxhgOPS9ZGpISEg_9GYkYmCq7Lw2Rt5Zx"
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


def _conductor() -> Conductor:
    fields = {
        "openai_api_key": None,
        "anthropic_api_key": None,
        "gemini_api_key": None,
        "local_enabled": False,
        "api_key": GATEWAY_KEY,
        "max_retries": 0,
        "data_dir": Path(tempfile.mkdtemp(prefix="conductor-schema-")),
    }
    # They take every OpenAI parameter and content part (as OpenAI-compatible upstreams do): a schema-valid
    # request is then served, not refused for a parameter the provider lacks.
    every = frozenset(SAMPLING_SETTINGS + FEATURE_SETTINGS)
    providers = [
        ScriptedProvider(
            "fake",
            reply="A scripted answer for schema tests.",
            models=["fake-small", "fake-large"],
            supported_settings=every,
        ),
        ScriptedProvider("spare", reply="Another scripted answer.", cost_per_token=None, supported_settings=every),
    ]
    for provider in providers:
        provider.reads_attachments = True  # images and PDFs too, as OpenAI-compatible upstreams take them
    return Conductor(load_settings(_env_file=None, **fields), extra_providers=providers, source="gateway")


# Loaded at import: schemathesis' lazy `from_fixture` does not work with this pytest (9.x).
# The app is given its Conductor: the ASGI transport runs the lifespan around each call, and
# an app without one would build a Conductor from the environment there.
CONDUCTOR = _conductor()
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CONDUCTOR), headers=AUTH)
# The key is given as the schema's own bearer scheme, not as a header forced onto every call:
# a forced header would undo a case whose negation is "Authorization missing", and the check
# would then expect a rejection the request no longer deserves.
schema.config.auth.openapi = OpenAPIAuthConfig(schemes={"HTTPBearer": {"bearer": GATEWAY_KEY}})


@pytest.fixture(scope="module")
def conductor() -> Iterator[Conductor]:
    yield CONDUCTOR
    CONDUCTOR.close()
    shutil.rmtree(CONDUCTOR.settings.data_dir, ignore_errors=True)


@schema.parametrize()
@pytest.mark.usefixtures("conductor")
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_response_matches_the_schema_and_none_is_a_server_error(case) -> None:
    case.call_and_validate()


def test_schema_valid_requests_reach_the_providers(conductor: Conductor) -> None:
    """Guards the run above against producing only refusals: requests generated from the same
    schema, valid by it, are served by a provider. It draws its own (a fixed sequence), so it
    means the same alone as after the run above (it used to count what that run had logged,
    and failed when run alone)."""
    served_before = conductor.log.count(status="ok")
    statuses: list[int] = []
    for path in ("/v1/chat/completions", "/v1/conductor/chat"):

        @given(case=schema[path]["POST"].as_strategy(GenerationMode.POSITIVE))
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        def call(case) -> None:
            statuses.append(case.call().status_code)

        call()
    assert any(200 <= status < 300 for status in statuses), statuses
    assert conductor.log.count(status="ok") > served_before


def test_the_documented_model_schema_and_the_validator_agree_on_blank_and_control_characters() -> None:
    """Schemathesis found "\\x1c": valid by the documented schema, but Python's strip() made it
    blank and the gateway answered 400. Now control characters are refused too (they were sent
    upstream): every whitespace or control character, alone, padded and inside a name, is
    judged alike by a JSON Schema validator reading the documented schema and by the gateway."""
    from jsonschema import Draft202012Validator
    from pydantic import ValidationError

    from gateway.schemas import MODEL_NOT_BLANK, ChatCompletionRequest

    documented = ChatCompletionRequest.model_json_schema()["properties"]["model"]
    assert documented["pattern"] == MODEL_NOT_BLANK
    schema = Draft202012Validator(documented)
    odd = [chr(c) for c in range(0x3001) if chr(c).isspace() or not chr(c).isprintable()] + ["\ufeff"]
    for model in [*odd, *(f" {c}\t" for c in odd), *(f"up/m{c}x" for c in odd), "  ", "auto"]:
        try:
            ChatCompletionRequest(model=model, messages=[{"role": "user", "content": "hi"}])
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == schema.is_valid(model), repr(model)
