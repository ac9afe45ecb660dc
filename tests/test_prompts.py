"""Prompts with versions and labels (workbench/prompts.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from conductor_core.models import MessageRole, ResponseFormatJsonSchema
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import ExperimentStore
from conductor_core.workbench.prompts import (
    PromptContent,
    PromptError,
    PromptMessage,
    PromptNotFoundError,
    PromptStore,
    PromptVariableError,
    diff,
    parse_reference,
)
from conductor_core.workbench.variants import Variant

pytestmark = pytest.mark.timeout(120)

V1 = PromptContent(
    system="You answer for {{company}}. Be brief.",
    messages=(PromptMessage(role="user", content="Customer asks: {{question}}"),),
    variant=Variant(provider="openai", model="gpt-6-luna", temperature=0.2, max_tokens=200),
)
V2 = PromptContent(
    system="You answer for {{company}}. Be brief and kind.",
    messages=(
        PromptMessage(role="user", content="Where is my order?"),
        PromptMessage(role="assistant", content="Let me check."),
        PromptMessage(role="user", content="Customer asks: {{question}}"),
    ),
    variant=Variant(provider="openai", model="gpt-6-luna", temperature=0.7, max_tokens=200),
)


@pytest.fixture
def prompts(backend) -> PromptStore:
    return PromptStore(backend.make())


def test_every_save_is_a_new_immutable_version(prompts: PromptStore, backend) -> None:
    first = prompts.save("support-reply", V1, by="ana", note="first cut")
    second = prompts.save("support-reply", V2, by="ben")
    assert (first.version, second.version) == (1, 2)
    assert first.id != second.id
    # Reading back gives each version as it was saved, the newest first.
    versions = prompts.versions("support-reply")
    assert [v.version for v in versions] == [2, 1]
    assert versions[1].content == V1.checked() and versions[1].created_by == "ana" and versions[1].note == "first cut"
    assert versions[0].content.messages == V2.messages and versions[0].content.variant.temperature == 0.7
    assert prompts.version_by_id(first.id).version == 1
    # A third save leaves 1 and 2 untouched.
    prompts.save("support-reply", V1, by="ana")
    assert prompts.version("support-reply", 2).content.system == V2.system
    assert [s.name for s in prompts.summaries()] == ["support-reply"]
    assert prompts.summaries()[0].latest == 3
    assert len(backend.raw_rows("prompt_versions")) == 3


def test_a_label_moves_between_versions_and_every_move_is_recorded(prompts: PromptStore) -> None:
    prompts.save("support-reply", V1, by="ana")
    prompts.save("support-reply", V2, by="ana")
    prompts.move_label("support-reply", "production", 1, by="ana")
    prompts.move_label("support-reply", "staging", 2, by="ana")
    assert prompts.resolve("support-reply").version == 1  # a bare name is the production label
    assert prompts.resolve("support-reply@staging").version == 2
    assert prompts.resolve("support-reply@1").labels == ("production",)

    prompts.move_label("support-reply", "production", 2, by="ben")
    assert prompts.resolve("support-reply@production").version == 2
    assert prompts.labels("support-reply") == {"production": 2, "staging": 2}
    prompts.remove_label("support-reply", "staging", by="ben")
    moves = [(m.label, m.from_version, m.to_version, m.moved_by) for m in prompts.moves("support-reply")]
    assert moves == [
        ("staging", 2, None, "ben"),
        ("production", 1, 2, "ben"),
        ("staging", None, 2, "ana"),
        ("production", None, 1, "ana"),
    ]
    with pytest.raises(PromptError, match="already points at version 2"):
        prompts.move_label("support-reply", "production", 2, by="ben")


def test_names_labels_and_references_give_errors_that_say_what_to_change(prompts: PromptStore) -> None:
    with pytest.raises(PromptError, match="not a prompt name.*letters, digits"):
        prompts.save("support reply", V1, by="ana")
    with pytest.raises(PromptError, match="not a prompt name"):
        prompts.save("a@b", V1, by="ana")
    with pytest.raises(PromptError, match="prompt is empty"):
        prompts.save("empty", PromptContent(system="  ", variant=V1.variant), by="ana")
    bad = PromptContent(messages=(PromptMessage(role="user", content="Hi {{ name"),), variant=V1.variant)
    with pytest.raises(PromptError, match=r"message 1 \(user\): line 1, column 4"):
        prompts.save("bad", bad, by="ana")
    prompts.save("support-reply", V1, by="ana")
    with pytest.raises(PromptError, match="not a label.*starting with a letter"):
        prompts.move_label("support-reply", "3rd", 1, by="ana")
    with pytest.raises(PromptError, match="not a label"):
        prompts.move_label("support-reply", "Production!", 1, by="ana")
    with pytest.raises(PromptNotFoundError, match="has no version 7 \\(versions 1 to 1\\)"):
        prompts.move_label("support-reply", "production", 7, by="ana")
    with pytest.raises(PromptNotFoundError, match="no prompt named 'nope' \\(prompts: support-reply\\)"):
        prompts.resolve("nope@production")
    with pytest.raises(PromptNotFoundError, match="has no label 'production' \\(labels: none yet\\)"):
        prompts.resolve("support-reply")
    assert parse_reference("a.b@12") == ("a.b", 12)
    with pytest.raises(PromptError, match="numbered from 1"):
        parse_reference("a@0")
    assert prompts.summaries()[0].name == "support-reply"  # nothing the errors refused was stored


def test_rendering_fills_every_variable_and_names_all_missing_at_once(prompts: PromptStore) -> None:
    version = prompts.save("support-reply", V1, by="ana")
    assert version.variables == ["company", "question"]
    system, messages = version.render({"company": "Acme", "question": "Where is it?"})
    assert system == "You answer for Acme. Be brief."
    assert [(m.role, m.content) for m in messages] == [(MessageRole.user, "Customer asks: Where is it?")]
    assert version.variant({"company": "Acme", "question": "?"}).system == system
    with pytest.raises(PromptVariableError, match=r"support-reply@1 needs a value for: company, question \(given: x\)"):
        version.render({"x": 1})


def test_a_diff_shows_the_messages_and_the_settings_that_changed(prompts: PromptStore) -> None:
    old = prompts.save("support-reply", V1, by="ana")
    schema = ResponseFormatJsonSchema.model_validate(
        {"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object"}}}
    )
    new = prompts.save(
        "support-reply",
        V2.model_copy(update={"variant": V2.variant.model_copy(update={"response_format": schema})}),
        by="ana",
    )
    found = diff(old, new)
    lines = found.text.splitlines()
    assert lines[:2] == ["--- support-reply@1", "+++ support-reply@2"]
    assert "-You answer for {{company}}. Be brief." in lines
    assert "+You answer for {{company}}. Be brief and kind." in lines
    assert "+Where is my order?" in lines and "+[assistant]" in lines
    changed = {c.name: (c.before, c.after) for c in found.settings}
    assert set(changed) == {"temperature", "response_format"}
    assert changed["temperature"] == ("0.2", "0.7")
    assert changed["response_format"][0] == "—" and '"reply"' in changed["response_format"][1]
    assert diff(old, old).same


def test_two_processes_saving_at_once_get_distinct_version_numbers(backend) -> None:
    stores = [PromptStore(backend.make()), PromptStore(backend.make())]
    stores[0].save("shared", V1, by="ana")
    errors: list[BaseException] = []

    def save(store: PromptStore) -> None:
        try:
            for _ in range(5):
                store.save("shared", V2, by="ana")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(v.version for v in stores[0].versions("shared")) == list(range(1, 12))


def test_an_experiment_run_records_the_prompt_version_it_started_from(backend) -> None:
    log = backend.make()
    prompts, experiments = PromptStore(log), ExperimentStore(log)
    version = prompts.save(
        "capitals",
        PromptContent(messages=(PromptMessage(role="user", content="Capital of {{country}}?"),), variant=V1.variant),
        by="ana",
    )
    experiment = experiments.create(
        "from a prompt",
        version.content.messages[-1].content,
        read_dataset("country,expected\nFrance,Paris\n", filename="d.csv"),
        [version.content.variant, version.content.variant.model_copy(update={"temperature": 1.0})],
    )
    run = experiments.new_run(experiment, "contains", {"openai": 1}, prompt_version_id=version.id)
    experiments.finish_run(run.id, "completed")
    assert experiments.run(run.id).prompt_version_id == version.id
    assert prompts.version_by_id(experiments.run(run.id).prompt_version_id).reference == "capitals@1"
    with log.engine.connect() as conn:
        assert conn.execute(text("SELECT prompt_version_id FROM experiment_runs")).scalar() == version.id


def test_rendered_messages_become_earlier_turns_and_the_message_to_send() -> None:
    from conductor_core.models import ChatMessage
    from conductor_core.workbench.prompts import as_turns

    def m(role: str, text: str) -> ChatMessage:
        return ChatMessage(role=MessageRole(role), content=text)

    assert as_turns([m("user", "a"), m("assistant", "b"), m("user", "c")]) == ([("a", "b")], "c")
    assert as_turns([m("user", "a"), m("user", "b")]) == ([], "a\n\nb")
    assert as_turns([m("user", "a"), m("assistant", "b")]) == ([("a", "b")], None)
    assert as_turns([]) == ([], None)
    assert as_turns([m("assistant", "hi"), m("user", "q")]) == ([("", "hi")], "q")
