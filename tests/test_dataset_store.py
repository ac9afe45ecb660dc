"""Named, versioned datasets (workbench/dataset_store.py) on SQLite and PostgreSQL: versions
that never change, rows added without copying the rest, export that reads back, the errors a
person can act on, and a run that records the dataset version its rows came from."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from workbench_support import cloud_conductor

from conductor_core.models import ChatMessage, ChatRequest, MessageRole
from conductor_core.workbench.dataset_store import DatasetStore, DatasetStoreError, row_from_request, row_values
from conductor_core.workbench.datasets import DatasetError, read_dataset
from conductor_core.workbench.experiments import ExperimentStore
from conductor_core.workbench.runner import start_run
from conductor_core.workbench.variants import Variant
from tests.store_backends import Backend

pytestmark = pytest.mark.timeout(180)

PNG = b"\x89PNG\r\n\x1a\n" + b"a receipt"
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def store_on(backend: Backend) -> DatasetStore:
    return DatasetStore(backend.make())


def raw_rows(backend: Backend) -> list[tuple]:
    return backend.raw_rows("dataset_rows")


def test_import_then_add_rows_makes_versions_that_never_change(backend: Backend) -> None:
    store = store_on(backend)
    v1 = store.import_dataset(
        "capitals", read_dataset("country,expected\nFrance,Paris\nItaly,Rome\n", filename="c.csv"), by="ana"
    )
    assert (v1.name, v1.version, v1.row_count, v1.columns, v1.created_by) == (
        "capitals",
        1,
        2,
        ("country", "expected"),
        "ana",
    )
    v2 = store.add_rows("capitals", [{"country": "Spain", "expected": "Madrid", "region": "south"}], by="local")
    assert (v2.version, v2.row_count, v2.columns) == (2, 3, ("country", "expected", "region"))
    assert v2.note == "added 1 row"

    # v1 reads as it was; v2 is v1's rows and the new one after them.
    assert [dict(r) for r in store.load("capitals", 1).rows] == [
        {"country": "France", "expected": "Paris"},
        {"country": "Italy", "expected": "Rome"},
    ]
    latest = store.load("capitals")
    assert [r["country"] for r in latest.rows] == ["France", "Italy", "Spain"]
    assert latest.expected(2) == "Madrid" and latest.columns == ("country", "expected", "region")
    # Adding a row wrote that row only: the database holds 3 rows for 2 versions.
    assert len(raw_rows(backend)) == 3

    # Importing a file again is a new version holding exactly the file's rows.
    v3 = store.import_dataset("capitals", read_dataset("country\nPeru\n"), by="ana", note="imported peru.csv")
    assert (v3.version, v3.row_count, v3.columns) == (3, 1, ("country",))
    assert [dict(r) for r in store.load("capitals").rows] == [{"country": "Peru"}]
    assert [r["country"] for r in store.load("capitals", 2).rows] == ["France", "Italy", "Spain"]
    assert [r["country"] for r in store.load("capitals", 1).rows] == ["France", "Italy"]
    assert [v.version for v in store.versions("capitals")] == [3, 2, 1]
    (info,) = store.datasets()
    assert (info.name, info.latest.version, info.latest.row_count, info.latest.label) == (
        "capitals",
        3,
        1,
        "capitals v3",
    )
    # Adding to v3 keeps v3's rows (not the ones v3 replaced).
    v4 = store.add_rows("capitals", [{"country": "Chile"}], by="local")
    assert [r["country"] for r in store.load("capitals", v4.version).rows] == ["Peru", "Chile"]


def test_adding_rows_to_a_new_name_creates_the_dataset(backend: Backend) -> None:
    store = store_on(backend)
    made = store.add_rows(
        "  support   replies ", [{"messages": [{"role": "user", "content": "hi"}], "expected": "hello"}], by="local"
    )
    assert (made.name, made.version, made.row_count) == ("support replies", 1, 1)
    dataset = store.load("support replies")
    assert dataset.rows[0]["messages"] == [{"role": "user", "content": "hi"}]  # JSON stays JSON
    assert store.names() == ["support replies"]


def test_export_as_csv_and_jsonl_reads_back_the_same_rows(backend: Backend) -> None:
    store = store_on(backend)
    text = 'id,question,expected,image\n1,"Total, in €?","12,40","PLACEHOLDER"\n2,"two\nlines",,\n'
    store.import_dataset("receipts", read_dataset(text.replace("PLACEHOLDER", PNG_URL)), by="local")
    store.add_rows("receipts", [{"id": "3", "question": "third", "expected": "7", "image": PNG_URL}], by="local")
    original = store.load("receipts")
    assert [len(row) for row in original.images] == [1, 0, 1]

    for fmt in ("csv", "jsonl"):
        data = store.export("receipts", None, fmt)
        back = read_dataset(data, filename=f"receipts.{fmt}")
        assert back.columns == original.columns, fmt
        for index, (row, again) in enumerate(zip(original.rows, back.rows, strict=True)):
            for column in ("id", "question", "expected"):
                assert (again.get(column) or "") == (row.get(column) or ""), (fmt, index, column)
        # The pictures travel as data URLs: the same bytes come back.
        assert [[a.data for a in row] for row in back.images] == [[PNG], [], [PNG]], fmt
        # ...and imported again, they make a new version equal to the first.
        again = store.import_dataset("receipts copy " + fmt, back, by="local")
        assert again.row_count == 3
    # An older version exports what it held.
    assert read_dataset(store.export("receipts", 1, "jsonl"), filename="x.jsonl").rows[-1]["id"] == "2"


def test_keys_never_reach_a_dataset(backend: Backend) -> None:
    store = store_on(backend)
    key = "sk-proj-Qm7rXw2TzK9vLp4N"
    store.add_rows("leaky", [{"prompt": f"my key is {key}", "expected": f"use {key}"}], by="local")
    stored = json.dumps([list(map(str, row)) for row in raw_rows(backend)])
    assert key not in stored and "[REDACTED]" in stored
    assert key not in store.export("leaky", None, "csv").decode()


def test_errors_say_what_to_change(backend: Backend) -> None:
    store = store_on(backend)
    with pytest.raises(DatasetStoreError, match="no dataset named 'nope'"):
        store.load("nope")
    store.add_rows("one", [{"a": "1"}], by="local")
    with pytest.raises(DatasetStoreError, match="has no version 5 \\(versions 1 to 1\\)"):
        store.load("one", 5)
    with pytest.raises(DatasetStoreError, match="needs a name"):
        store.add_rows("   ", [{"a": "1"}], by="local")
    with pytest.raises(DatasetStoreError, match="at most 100 characters"):
        store.add_rows("x" * 101, [{"a": "1"}], by="local")
    with pytest.raises(DatasetStoreError, match="no rows to add"):
        store.add_rows("one", [], by="local")
    with pytest.raises(DatasetError, match="row 1, column image"):
        store.add_rows("one", [{"image": "data:image/png;base64,@@@"}], by="local")
    with pytest.raises(DatasetStoreError, match="csv or jsonl"):
        store.export("one", None, "xlsx")  # type: ignore[arg-type]
    # Nothing half-written: the failed calls made no version.
    assert [v.version for v in store.versions("one")] == [1]


def test_a_run_records_the_dataset_version_and_a_rerun_keeps_it(backend: Backend, clouds) -> None:
    conductor = cloud_conductor(clouds, backend.data_dir, backend.url)
    try:
        recorded_run(conductor)
    finally:
        conductor.close()


def recorded_run(conductor) -> None:
    datasets = DatasetStore(conductor.log)
    saved = datasets.add_rows("capitals", [{"country": "France", "expected": "Paris"}], by="local")
    datasets.add_rows("capitals", [{"country": "Italy", "expected": "Rome"}], by="local")
    store = ExperimentStore(conductor.log)
    variants = [Variant(provider="openai"), Variant(provider="anthropic")]
    experiment = store.create("Capitals", "Capital of {{country}}?", datasets.load("capitals", 1), variants)
    handle = start_run(conductor, store, experiment.id, dataset=("capitals", saved.version))
    handle.wait(timeout=120)
    run = store.run(handle.run_id)
    assert (run.dataset_name, run.dataset_version, run.dataset_label) == ("capitals", 1, "dataset capitals v1")
    again = start_run(conductor, store, experiment.id)  # "Run again" on the page
    again.wait(timeout=120)
    assert store.run(again.run_id).dataset_label == "dataset capitals v1"
    pasted = store.create("Pasted", "Capital of {{country}}?", read_dataset("country\nPeru\n"), variants)
    assert store.new_run(pasted, "contains", {}).dataset_label is None


def test_a_logged_request_becomes_a_row_with_its_messages_and_the_good_answer(backend: Backend, clouds) -> None:
    """A request sent through the router to a loopback upstream: the log keeps a transcript,
    read back into `messages` and `prompt`; the answer becomes `expected` only when marked good."""
    conductor = cloud_conductor(clouds, backend.data_dir, backend.url)
    try:
        request = ChatRequest(
            provider="openai",
            messages=[
                ChatMessage(role=MessageRole.system, content="Answer in one word."),
                ChatMessage(role=MessageRole.user, content="Capital of France?\nJust the city."),
            ],
        )
        conductor.chat(request, request_id="req_capital")
        assert conductor.log.flush()
        found = row_from_request(conductor.log, None, "req_capital")
        assert found.values["prompt"] == "Capital of France?\nJust the city."
        assert found.values["messages"] == [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Capital of France?\nJust the city."},
        ]
        assert found.answer == "Paris is the capital, I believe."  # what the loopback server said
        assert "expected" not in found.row(answer_is_good=False)
        row = found.row(answer_is_good=True)
        assert row["expected"] == found.answer
        store = DatasetStore(conductor.log)
        version = store.add_rows("from traffic", [row], by="local", source="dashboard:req_capital")
        loaded = store.load("from traffic", version.version)
        assert loaded.expected(0) == found.answer and loaded.rows[0]["messages"] == found.values["messages"]
        # A request whose prompt the log did not keep cannot be added, and says why.
        conductor.log.log_prompts = False
        conductor.chat(request, request_id="req_quiet")
        assert conductor.log.flush()
        with pytest.raises(DatasetStoreError, match="CONDUCTOR_LOG_PROMPTS=false"):
            row_from_request(conductor.log, None, "req_quiet")
    finally:
        conductor.close()


def test_an_experiment_cells_request_brings_its_rows_variables(tmp_path, clouds) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    try:
        store = ExperimentStore(conductor.log)
        variants = [Variant(provider="openai"), Variant(provider="gemini")]
        dataset = read_dataset("country,expected\nFrance,Paris\n")
        experiment = store.create("Capitals", "Capital of {{country}}?", dataset, variants)
        handle = start_run(conductor, store, experiment.id)
        assert handle.wait(timeout=120)
        assert conductor.log.flush()
        cell = store.cells(handle.run_id)[0]
        assert cell.request_id is not None
        found = row_from_request(conductor.log, None, cell.request_id)
        # The variables, the rendered prompt; the old expected is not carried over.
        assert found.values["country"] == "France" and found.values["prompt"] == "Capital of France?"
        assert "expected" not in found.values and "experiment row" in found.note
    finally:
        conductor.close()


def test_processes_adding_rows_at_once_each_get_their_own_version(backend: Backend) -> None:
    """Four stores (as four processes would) add rows to one dataset at the same moment: every
    row lands, each addition is its own version, and each version holds the rows before it."""
    stores = [store_on(backend) for _ in range(4)]
    stores[0].add_rows("shared", [{"n": "0"}], by="local")
    start = threading.Barrier(len(stores))
    made: list[int] = []
    errors: list[BaseException] = []

    def add(index: int, store: DatasetStore) -> None:
        try:
            start.wait(timeout=60)
            for round_ in range(3):
                made.append(store.add_rows("shared", [{"n": f"{index}.{round_}"}], by=f"p{index}").version)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=add, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(made) == list(range(2, 14))  # 12 additions, 12 versions, none lost or shared
    versions = stores[0].versions("shared")
    assert [v.row_count for v in reversed(versions)] == list(range(1, 14))
    final = stores[0].load("shared")
    assert len({row["n"] for row in final.rows}) == 13
    for version in versions:  # each version: the one before it and one more row
        assert len(stores[0].load("shared", version.version)) == version.row_count


def test_a_message_with_a_picture_keeps_it_in_the_image_column(backend: Backend) -> None:
    from conductor_core.workbench.attachments import from_upload, message_parts

    picture = from_upload("receipt.png", PNG)
    asked = ChatMessage(role=MessageRole.user, parts=message_parts("Total of this receipt?", [picture]))
    values = row_values([asked])
    assert values["prompt"] == "Total of this receipt?" and values["image"].startswith("data:image/png;base64,")
    store = store_on(backend)
    store.add_rows("receipts", [{**values, "expected": "12.40"}], by="local")
    loaded = store.load("receipts")
    assert [[a.data for a in row] for row in loaded.images] == [[PNG]]
    assert loaded.image_columns == ("image",)


def test_a_deleted_chat_leaves_the_pictures_a_dataset_still_uses(backend: Backend) -> None:
    from conductor_core.workbench.attachments import from_upload
    from conductor_core.workbench.sessions import SessionStore

    log = backend.make()
    datasets, sessions = DatasetStore(log), SessionStore.for_log(log)
    datasets.add_rows("receipts", [{"id": "1", "image": PNG_URL}], by="local")
    chat = sessions.create("chat", [Variant(provider="openai")])
    sessions.add_turn(chat.id, "and this?", parent_id=None, attachments=[from_upload("same.png", PNG)])
    assert sessions.delete(chat.id)  # the chat was the picture's other user
    assert [[a.data for a in row] for row in datasets.load("receipts").images] == [[PNG]]
