"""The Prompts page and a prompt opened in Compare and Chat, under AppTest with scripted providers."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import tests.playground_fakes as fakes
from playground import state as playground_state
from tests.test_playground_pages import APP, contents, new_session, no_traceback, plain, settle

pytestmark = pytest.mark.timeout(180)


def opened_at(page: str, reference: str) -> AppTest:
    """A new tab opening `page?open_prompt=reference` (a link from the Prompts page)."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.switch_page(page)
    at.query_params["open_prompt"] = reference
    at.run()
    assert not at.exception, at.exception
    return at


def save_prompt(at, system: str, user: str, temperature: float) -> None:
    at.selectbox(key="pr_provider").set_value("alpha").run()
    at.slider(key="pr_temperature").set_value(temperature).run()
    at.text_area(key="pr_system").set_value(system).run()
    at.text_area(key="pr_text_0").set_value(user).run()
    next(b for b in at.button if b.label in ("Save prompt", "Save as new version")).click().run()
    no_traceback(at)


def test_save_twice_label_diff_and_open_in_compare_and_chat(env) -> None:
    at = new_session()
    at.switch_page("views/prompts.py").run()
    no_traceback(at)
    at.text_input(key="pr_new_name").set_value("support reply").run()
    save_prompt(at, "You answer for {{company}}.", "Customer asks: {{question}}", 0.2)
    assert any("not a prompt name" in plain(e.value) for e in at.error)  # a space: said, nothing saved
    assert playground_state.prompts().summaries() == []

    at.text_input(key="pr_new_name").set_value("support-reply").run()
    save_prompt(at, "You answer for {{company}}.", "Customer asks: {{question}}", 0.2)
    assert any("Saved support-reply version 1." in plain(s.value) for s in at.success)
    assert at.query_params["prompt"] in ("support-reply", ["support-reply"])
    save_prompt(at, "You answer kindly for {{company}}.", "Customer asks: {{question}}", 0.9)
    assert any("Saved support-reply version 2." in plain(s.value) for s in at.success)

    # Editing from version 1 loads it; saving it again would restore it as version 3.
    at.selectbox(key="pr_base_support-reply").set_value(1).run()
    assert at.text_area(key="pr_system").value == "You answer for {{company}}."
    at.selectbox(key="pr_base_support-reply").set_value(2).run()
    assert at.text_area(key="pr_system").value == "You answer kindly for {{company}}."

    # Label v1 production, then see the diff of v1 -> v2.
    at.text_input(key="pr_label_name").set_value("production")
    at.selectbox(key="pr_label_version").set_value(1)
    next(b for b in at.get("form_submit_button") if b.label == "Move label").click().run()
    no_traceback(at)
    assert playground_state.prompts().labels("support-reply") == {"production": 1}
    assert any("production now points at v1." in plain(s.value) for s in at.success)
    code = [c.value for c in at.code]
    diff = next(v for v in code if v.startswith("--- support-reply@1"))
    assert "-You answer for {{company}}." in diff and "+You answer kindly for {{company}}." in diff
    # A label that is not wanted any more goes, recorded.
    at.text_input(key="pr_label_name").set_value("staging")
    at.selectbox(key="pr_label_version").set_value(2)
    next(b for b in at.get("form_submit_button") if b.label == "Move label").click().run()
    at.text_input(key="pr_label_name").set_value("staging")
    next(b for b in at.get("form_submit_button") if b.label == "Remove label").click().run()
    assert any("staging removed (it pointed at v2)." in plain(s.value) for s in at.success)
    assert playground_state.prompts().labels("support-reply") == {"production": 1}
    assert [(m.label, m.to_version) for m in playground_state.prompts().moves("support-reply")][:2] == [
        ("staging", None),
        ("staging", 2),
    ]
    at.selectbox(key="pr_open_at").set_value("@production").run()
    assert any("model='prompt:support-reply@production'" in c.value for c in at.code)  # Get code on the page

    # Open in Compare at the label: the variables form, then every column answers.
    compare = opened_at("views/compare.py", "support-reply@production")
    no_traceback(compare)
    compare.text_input(key="compare_prompt_var_company").set_value("Acme")
    compare.text_input(key="compare_prompt_var_question").set_value("Where is my parcel?")
    next(b for b in compare.get("form_submit_button") if b.label == "Send").click().run()
    settle(compare)
    no_traceback(compare)
    alpha = fakes.FAKES["alpha"].calls[-1]
    assert contents(alpha) == ["You answer for Acme.", "Customer asks: Where is my parcel?"]
    assert alpha.temperature == 0.2  # version 1's settings: production points at v1
    assert len([c for f in fakes.FAKES.values() for c in f.calls]) == 2  # column 2 answered too

    # ...and in Chat at version 2.
    chat = opened_at("views/chat.py", "support-reply@2")
    no_traceback(chat)
    chat.text_input(key="chat_prompt_var_company").set_value("Acme")
    chat.text_input(key="chat_prompt_var_question").set_value("Hello?")
    next(b for b in chat.get("form_submit_button") if b.label == "Send").click().run()
    settle(chat)
    call = fakes.FAKES["alpha"].calls[-1]
    assert contents(call) == ["You answer kindly for Acme.", "Customer asks: Hello?"] and call.temperature == 0.9


def test_a_missing_variable_is_asked_for_and_nothing_is_sent(env) -> None:
    from conductor_core.workbench.prompts import PromptContent, PromptMessage
    from conductor_core.workbench.variants import Variant

    at = new_session()  # builds the Conductor and its stores
    playground_state.prompts().save(
        "greet",
        PromptContent(messages=(PromptMessage(role="user", content="Hi {{name}}"),), variant=Variant(provider="alpha")),
        by="local",
    )
    at = opened_at("views/chat.py", "greet@1")
    next(b for b in at.get("form_submit_button") if b.label == "Send").click().run()
    assert any("Fill in name first." in plain(w.value) for w in at.warning)
    assert not fakes.FAKES["alpha"].calls


def test_an_experiment_started_from_a_prompt_records_its_version_and_a_rerun_too(env) -> None:
    from conductor_core.workbench.prompts import PromptContent, PromptMessage
    from conductor_core.workbench.variants import Variant
    from tests.test_playground_experiments import experiments_page, finish, start

    new_session()  # builds the Conductor and its stores
    prompts = playground_state.prompts()
    prompts.save(
        "capitals",
        PromptContent(
            system="Answer with the city only.",
            messages=(PromptMessage(role="user", content="Capital of {{country}}?"),),
            variant=Variant(provider="alpha", model="alpha-small", temperature=0.1),
        ),
        by="local",
    )
    saved = prompts.save(
        "capitals",
        PromptContent(
            system="Answer with the city only.",
            messages=(PromptMessage(role="user", content="What is the capital of {{country}}?"),),
            variant=Variant(provider="alpha", model="alpha-small", temperature=0.1),
        ),
        by="local",
    )
    prompts.move_label("capitals", "staging", 2, by="local")
    at = experiments_page(open_prompt="capitals@staging")
    assert at.text_area(key="exp_template").value == "What is the capital of {{country}}?"
    assert any("From prompt capitals@2" in plain(c.value) for c in at.caption)
    at.text_area(key="exp_data_text").set_value("country,expected\nFrance,Paris\n").run()
    finish(start(at))
    run = playground_state.experiments().run(at.query_params["run"])
    assert run.prompt_version_id == saved.id
    assert any("ran prompt capitals@2" in plain(c.value) for c in at.caption)
    call = fakes.FAKES["alpha"].calls[-1]
    assert contents(call) == ["Answer with the city only.", "What is the capital of France?"]
    assert call.temperature == 0.1
    at.button(key=f"exp_rerun_{run.experiment_id}").click().run()
    finish(at)
    runs = playground_state.experiments().runs(run.experiment_id)
    assert [r.prompt_version_id for r in runs] == [saved.id, saved.id]
