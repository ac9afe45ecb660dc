"""AUTO's `evaluated` policy end to end: two runs of a saved prompt on loopback upstreams, with
exact pass rates, then a gateway request `prompt:NAME` (official openai client) routed by the
latest run's pass rates, the reason and the `x-conductor-*` headers saying so."""

from __future__ import annotations

import pytest

from conductor_core.config import EndpointConfig
from conductor_core.models import RoutingPolicy
from conductor_core.testing.protocol_servers import OpenAIServer
from conductor_core.workbench.dataset_store import DatasetStore
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import ExperimentStore
from conductor_core.workbench.prompts import PromptContent, PromptMessage, PromptStore
from conductor_core.workbench.runner import start_run
from conductor_core.workbench.variants import Variant
from gateway.main import create_app
from tests.test_gateway import client, make_conductor, serve

pytestmark = pytest.mark.timeout(300)

#: Twenty rows: 18 expect "alpha", 2 expect "beta" (the `contains` check).
ROWS = "text,expected\n" + "".join(f"invoice {i},{'beta' if i < 2 else 'alpha'}\n" for i in range(20))


def test_a_prompt_request_goes_to_the_cheapest_target_within_the_margin_of_the_best(tmp_path) -> None:
    with OpenAIServer(reply="gamma") as cheap, OpenAIServer(reply="alpha beta") as dear:
        cheap.models, dear.models = ["gpt-4o-mini"], ["gpt-4o"]
        endpoints = {
            "cheap": EndpointConfig(base_url=cheap.url, models=["gpt-4o-mini"], price_provider="openai"),
            "dear": EndpointConfig(base_url=dear.url, models=["gpt-4o"], price_provider="openai"),
        }
        conductor = make_conductor(tmp_path, endpoints=endpoints, evaluated_margin=0.10, timeout_s=30.0)
        try:
            prompts = PromptStore(conductor.log)
            version = prompts.save(
                "invoices",
                PromptContent(
                    messages=(PromptMessage(role="user", content="Read {{text}}"),),
                    variant=Variant(provider="auto", policy=RoutingPolicy.evaluated, max_tokens=50),
                ),
                by="ana",
            )
            prompts.move_label("invoices", "production", version.version, by="ana")
            saved = DatasetStore(conductor.log).import_dataset("invoices", read_dataset(ROWS), by="ana")
            store = ExperimentStore(conductor.log)
            experiment = store.create(
                "Invoices",
                "Read {{text}}",
                read_dataset(ROWS),
                [Variant(provider="cheap", model="gpt-4o-mini"), Variant(provider="dear", model="gpt-4o")],
            )

            def run() -> str:
                handle = start_run(
                    conductor,
                    store,
                    experiment.id,
                    check="contains",
                    dataset=("invoices", saved.version),
                    prompt_version_id=version.id,
                )
                assert handle.wait(240)
                return handle.run_id

            first = run()  # cheap answers "gamma": 0 of 20; dear 20 of 20
            cheap.reply = "alpha"  # now 18 of 20
            second = run()
            rates = [[(s.passed, s.checked) for s in store.stats(r)] for r in (first, second)]
            assert rates == [[(0, 20), (20, 20)], [(18, 20), (20, 20)]]

            with serve(create_app(conductor)) as url:
                api = client(url)
                raw = api.chat.completions.with_raw_response.create(
                    model="prompt:invoices", messages=[], extra_body={"variables": {"text": "invoice 99"}}
                )
                assert raw.headers["x-conductor-prompt"] == "invoices@1"
                assert raw.headers["x-conductor-provider"] == "cheap"
                assert raw.headers["x-conductor-route"] == "auto"
                where = f"dataset invoices v{saved.version}, run 2"
                assert raw.headers["x-conductor-route-reason"] == (
                    f"cheapest within 10 points of the best pass rate: 0.90 vs 1.00 on {where}"
                )
                assert raw.parse().choices[0].message.content == "alpha"
                assert cheap.requests[-1]["json"]["messages"] == [{"role": "user", "content": "Read invoice 99"}]

                # With a 5-point margin 0.90 no longer counts: the best goes first.
                conductor.settings.evaluated_margin = 0.05
                raw = api.chat.completions.with_raw_response.create(
                    model="prompt:invoices", messages=[], extra_body={"variables": {"text": "invoice 99"}}
                )
                assert raw.headers["x-conductor-provider"] == "dear"
                assert raw.headers["x-conductor-route-reason"] == (
                    f"cheapest within 5 points of the best pass rate: 1.00 vs 1.00 on {where}"
                )

                # The same policy without a prompt ranks as balanced, and says why.
                plain = api.chat.completions.with_raw_response.create(
                    model="auto",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_body={"policy": "evaluated"},
                )
                assert plain.headers["x-conductor-route-reason"].startswith(
                    "no prompt in the request (the evaluated policy needs one), so as balanced: "
                )
        finally:
            conductor.close()
