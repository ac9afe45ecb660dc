"""Experiments over images: an `image` column (a data URL, or a path inside an uploaded zip),
each row's pictures sent after its text as image parts (checked at a loopback upstream, byte
for byte), stored once by content, and a variant that reads text only refused before any call."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select
from workbench_support import cloud_conductor

from conductor_core.config import load_settings
from conductor_core.models import MAX_ATTACHMENT_BYTES
from conductor_core.router import Conductor
from conductor_core.workbench.datasets import DatasetError, is_image_column, read_dataset
from conductor_core.workbench.experiments import ExperimentError, ExperimentStore
from conductor_core.workbench.replay import attachments_of, replay_of
from conductor_core.workbench.runner import image_refusals, start_run
from conductor_core.workbench.sessions import attachments_table, row_attachments_table
from conductor_core.workbench.variants import Variant

pytestmark = pytest.mark.timeout(180)

PNG = b"\x89PNG\r\n\x1a\n"
PDF = b"%PDF-1.4\n%%EOF\n"


def picture(n: int) -> bytes:
    """A distinct 'PNG' per n (a file is what its first bytes say)."""
    return PNG + f"invoice {n}".encode()


def url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def a_zip(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_which_columns_are_images() -> None:
    assert [is_image_column(c) for c in ("image", "Receipt_Image", "images", "imaged", "question")] == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_data_urls_become_pictures_named_by_row_and_their_cell_their_name() -> None:
    # A data URL holds a comma: quoted in a CSV, as any field with the delimiter.
    dataset = read_dataset(f'id,image,expected\n1,"{url(picture(1))}",a\n2,,b\n3,"{url(picture(1))}",c\n')
    assert dataset.image_columns == ("image",)
    assert [[a.data for a in row] for row in dataset.images] == [[picture(1)], [], [picture(1)]]
    assert [row["image"] for row in dataset.rows] == ["image-1.png", "", "image-3.png"]
    assert dataset.images[0][0].ref.sha256 == dataset.images[2][0].ref.sha256
    assert dataset.images[0][0].data is dataset.images[2][0].data  # one copy in memory


def test_a_zip_holds_the_rows_and_the_pictures_beside_them() -> None:
    data = a_zip(
        {
            "invoices/rows.jsonl": '{"id": 1, "image": "scans/a.png", "back_image": "/scans/b.png"}\n'
            '{"id": 2, "image": "invoices/scans/b.png", "back_image": ""}\n',
            "invoices/scans/a.png": picture(1),
            "invoices/scans/b.png": picture(2),
            "__MACOSX/invoices/._rows.jsonl": "junk",
        }
    )
    dataset = read_dataset(data, filename="invoices.zip")
    assert dataset.image_columns == ("image", "back_image")
    # Paths relative to the data file's folder or to the zip's root; in column order.
    assert [[a.data for a in row] for row in dataset.images] == [[picture(1), picture(2)], [picture(2)]]
    assert dataset.rows[0]["image"] == "scans/a.png" and dataset.rows[1]["id"] == 2


@pytest.mark.parametrize(
    ("rows", "files", "says"),
    [
        ("id,image\n1,x.png\n2,missing.png\n", {"x.png": picture(1)}, "row 2, column image: the zip has no file"),
        ("id,image\n1,doc.pdf\n", {"doc.pdf": PDF}, "row 1, column image: doc.pdf is a PDF, not an image"),
        ("id,image\n1,notes.png\n", {"notes.png": b"hello"}, "row 1, column image: notes.png is not a PNG"),
        (
            "id,image\n1,x.png\n2,big.png\n",
            {"x.png": picture(1), "big.png": PNG + b"\0" * MAX_ATTACHMENT_BYTES},
            "row 2, column image: big.png is 5.0 MB: at most 5 MB per image",
        ),
    ],
)
def test_a_refused_picture_names_its_row_and_what_to_change(rows: str, files: dict, says: str) -> None:
    with pytest.raises(DatasetError) as caught:
        read_dataset(a_zip({"rows.csv": rows, **files}), filename="set.zip")
    assert says in str(caught.value)


def test_a_path_outside_a_zip_and_a_zip_with_two_tables_say_what_to_do() -> None:
    with pytest.raises(
        DatasetError, match=r"row 1, column image: 'cat.png' is not a data URL; upload the dataset as a \.zip"
    ):
        read_dataset("id,image\n1,cat.png\n")
    with pytest.raises(DatasetError, match="exactly one CSV or JSONL file"):
        read_dataset(a_zip({"a.csv": "id\n1\n", "b.jsonl": '{"id": 1}\n'}), filename="two.zip")
    with pytest.raises(DatasetError, match="base64 is not valid"):
        read_dataset('id,image\n1,"data:image/png;base64,@@@"\n')


def test_an_experiment_run_sends_each_rows_picture_after_its_text_stored_once(clouds, tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    # Six rows, five distinct pictures: rows 5 and 6 share one.
    files = {f"scans/{n}.png": picture(n) for n in range(1, 6)}
    rows = "id,image\n" + "".join(f"{n},scans/{min(n, 5)}.png\n" for n in range(1, 7))
    dataset = read_dataset(a_zip({"rows.csv": rows, **files}), filename="invoices.zip")
    store = ExperimentStore(conductor.log)
    variants = [Variant(provider="openai", temperature=0.0), Variant(provider="openai", temperature=1.0)]
    experiment = store.create("Invoices", "Extract invoice {{id}} in this image as JSON", dataset, variants)
    for _ in range(2):  # a second run sends the same bytes and stores nothing new
        handle = start_run(conductor, store, experiment.id)
        assert handle.wait(120)
        assert handle.progress().ok == 12

    sent = [entry["json"]["messages"][-1]["content"] for entry in clouds["openai"].requests]
    assert len(sent) == 24
    for content in sent:
        text, image = content
        assert text["type"] == "text" and image["type"] == "image_url"
        row = int(text["text"].split()[2])
        assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == picture(min(row, 5))
        assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert sorted({int(c[0]["text"].split()[2]) for c in sent}) == [1, 2, 3, 4, 5, 6]

    with conductor.log.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(attachments_table)).scalar() == 5
        assert conn.execute(select(func.count()).select_from(row_attachments_table)).scalar() == 6
    # The request log names the picture, never holds its bytes.
    assert all("[image:" in record.prompt and "base64" not in record.prompt for record in conductor.log.records())
    # The grid carries each row's picture for its thumbnail.
    grid = store.grid(handle.run_id, offset=0, limit=10)
    assert [[a.data for a in row.images] for row in grid] == [[picture(min(n, 5))] for n in range(1, 7)]
    # A replay of a cell's request sends its row's picture again, after the text.
    replay = replay_of(conductor.log, None, grid[3].cells[1].request_id)
    assert replay.parameters_known and replay.messages[-1].content == "Extract invoice 4 in this image as JSON"
    assert [a.data for a in attachments_of(replay.messages[-1])] == [picture(4)]


def test_the_local_model_is_refused_before_the_run_with_the_reason(tmp_path: Path) -> None:
    conductor = Conductor(load_settings(_env_file=None, local_enabled=True, data_dir=tmp_path, max_retries=0))
    store = ExperimentStore(conductor.log)
    dataset = read_dataset(f'id,image\n1,"{url(picture(1))}"\n')
    variants = [Variant(provider="local"), Variant(provider="local", temperature=0.0)]
    experiment = store.create("Local", "Read {{id}}", dataset, variants)
    assert image_refusals(conductor, variants, dataset.image_columns) == [
        "local reads text only: remove it or the image column (image)"
    ]
    with pytest.raises(ExperimentError, match=r"local reads text only: remove it or the image column \(image\)"):
        start_run(conductor, store, experiment.id)
    assert store.runs(experiment.id) == [] and conductor.log.records() == []  # nothing ran, nothing sent
    # Without an image column the same variants may run; so do rows whose image cells are all blank.
    assert image_refusals(conductor, variants, read_dataset("id\n1\n").image_columns) == []
    blank = store.create("Blank", "Read {{id}}", read_dataset("id,image\n1,\n"), variants)
    assert store.has_images(experiment.id) and not store.has_images(blank.id)  # start_run refuses only the first


def test_a_deleted_chat_leaves_the_pictures_an_experiment_still_uses(tmp_path: Path) -> None:
    from conductor_core.store import RequestLog
    from conductor_core.workbench.attachments import from_upload
    from conductor_core.workbench.sessions import SessionStore

    log = RequestLog(None, data_dir=tmp_path)
    try:
        experiments, sessions = ExperimentStore(log), SessionStore.for_log(log)
        dataset = read_dataset(f'id,image\n1,"{url(picture(1))}"\n')
        variants = [Variant(provider="openai"), Variant(provider="openai", temperature=0.0)]
        experiment = experiments.create("Shared", "Read {{id}}", dataset, variants)
        chat = sessions.create("chat", [variants[0]])
        sessions.add_turn(chat.id, "and this?", parent_id=None, attachments=[from_upload("same.png", picture(1))])
        with log.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(attachments_table)).scalar() == 1  # shared
        assert sessions.delete(chat.id)
        assert [a.data for a in experiments.images(experiment.id, 0)[0]] == [picture(1)]
    finally:
        log.close()
