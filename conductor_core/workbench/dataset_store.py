"""Datasets that last: named, with immutable versions, grown from real traffic.

    store = DatasetStore(log)
    store.import_dataset("invoices", read_dataset(data, filename="invoices.csv"), by="ana")  # v1 (or a new version)
    store.add_rows("invoices", [{"prompt": "Total of ...", "expected": "12.40"}], by="local", source="log:req_1")
    store.load("invoices")            # the latest version as a `Dataset` (rows, columns, images)
    store.load("invoices", 1)         # exactly what v1 held, whatever came after
    store.export("invoices", 2, "csv")  # bytes that `read_dataset` reads back

How versions are kept without copying rows: every row carries the version it was added in
(`added_in`) and, once a later import replaced it, the version it left in (`removed_in`). A
version holds the rows with ``added_in <= version < removed_in`` (no `removed_in`: still
there), in the order they were added. Adding rows to a dataset writes only those rows and one
`dataset_versions` row; importing a file as a new version marks the rows before it as removed
in that version (one UPDATE) and writes the file's rows. A row never changes otherwise, so an
old version reads the same forever, and an experiment run can say which one it used.

Pictures (image columns, as datasets.py reads them) are kept once by content in
`attachments`, referenced per row by `dataset_row_attachments` (sessions.py, beside the other
tables that use the bytes). Every text value is redacted on the way in: a key that was in a
pasted file or a logged prompt never lands in a dataset.

Tables (created by the store's migrations):

    datasets                  id, name (unique), created_at/_ts, created_by
    dataset_versions          (dataset_id, version) -> created_at/_ts, created_by, columns (JSON),
                              row_count, note ("imported invoices.csv", "1 row from the Dashboard")
    dataset_rows              (dataset_id, row_id) -> added_in, removed_in, row_values (JSON),
                              expected, source (where a row came from: "log:req_…", "chat:…")
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..models import ChatMessage, MessageRole, new_id, utcnow
from ..secrets import redact_json
from ..store import RequestLog, SafeText, UTCDateTime
from .attachments import Attachment, AttachmentRef
from .datasets import EXPECTED_COLUMN, Dataset, DatasetError, is_image_column, read_dataset
from .experiments import cells_table, runs_table
from .experiments import rows_table as experiment_rows_table
from .replay import ReplayError, attachments_of, replay_of
from .sessions import SessionStore, attachments_table, dataset_row_attachments_table, keep_bytes
from .sessions import metadata as attachments_metadata

__all__ = [
    "DatasetStore",
    "DatasetStoreError",
    "DatasetInfo",
    "DatasetVersion",
    "ExportFormat",
    "metadata",
    "MAX_NAME_CHARS",
    "TrafficRow",
    "row_from_request",
    "row_values",
]

MAX_NAME_CHARS = 100
ExportFormat = Literal["csv", "jsonl"]


class DatasetStoreError(DatasetError):
    """The dataset or version asked for does not exist, or a name is not usable; the message
    says what to change."""


metadata = MetaData()

datasets_table = Table(
    "datasets",
    metadata,
    Column("id", String(), primary_key=True),
    Column("name", SafeText(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("created_by", SafeText(), nullable=False),
    UniqueConstraint("name", name="uq_datasets_name"),
)

versions_table = Table(
    "dataset_versions",
    metadata,
    Column("dataset_id", String(), primary_key=True),
    Column("version", Integer(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("created_by", SafeText(), nullable=False),
    Column("columns", SafeText(), nullable=False),  # JSON list, in order
    Column("row_count", Integer(), nullable=False),
    Column("note", SafeText()),
)

rows_table = Table(
    "dataset_rows",
    metadata,
    Column("dataset_id", String(), primary_key=True),
    Column("row_id", Integer(), primary_key=True),  # 1, 2, ... per dataset, in the order added
    Column("added_in", Integer(), nullable=False),
    Column("removed_in", Integer()),  # NULL: in every version from added_in on
    Column("row_values", SafeText(), nullable=False),  # JSON object
    Column("expected", SafeText()),
    Column("source", SafeText()),
    Index("ix_dataset_rows_added_in", "dataset_id", "added_in"),
)


@dataclass(frozen=True)
class DatasetVersion:
    dataset_id: str
    name: str
    version: int
    created_at: datetime
    created_by: str
    columns: tuple[str, ...]
    row_count: int
    note: str | None

    @property
    def label(self) -> str:
        """How pages and runs name it: "invoices v3"."""
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset and its newest version."""

    id: str
    name: str
    created_at: datetime
    created_by: str
    latest: DatasetVersion


def _clean_name(name: str) -> str:
    clean = " ".join(name.split())
    if not clean:
        raise DatasetStoreError("a dataset needs a name, e.g. invoices")
    if len(clean) > MAX_NAME_CHARS:
        raise DatasetStoreError(f"a dataset name is at most {MAX_NAME_CHARS} characters; shorten it")
    return clean


def _expected_text(values: Mapping[str, Any]) -> str | None:
    value = values.get(EXPECTED_COLUMN)
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if text.strip() else None


class DatasetStore:
    """Datasets and their versions, in the request log's database. Thread-safe (one engine,
    short transactions); share one per process."""

    def __init__(self, log: RequestLog) -> None:
        self.engine = log.engine
        log.require_tables(metadata)
        log.require_tables(attachments_metadata)

    # --- writing -------------------------------------------------------------------------

    def import_dataset(
        self, name: str, dataset: Dataset, *, by: str, note: str | None = None, source: str | None = None
    ) -> DatasetVersion:
        """A new dataset named `name` holding `dataset`'s rows, or, when it exists, a new
        version of it holding exactly these rows (the earlier versions keep theirs)."""
        return self._write(name, dataset, by=by, note=note or "imported", source=source, replace=True)

    def add_rows(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        by: str,
        note: str | None = None,
        source: str | None = None,
    ) -> DatasetVersion:
        """A new version: the latest one's rows and these after them (a new dataset when none
        is named `name`). A row is column -> value (text, a number or JSON; `expected` is the
        good answer); image columns take data URLs, as a pasted dataset does."""
        if not rows:
            raise DatasetStoreError("no rows to add")
        columns: dict[str, None] = {}
        for row in rows:
            if not isinstance(row, Mapping) or not row:
                raise DatasetStoreError("each row is a mapping of column names to values, with at least one column")
            columns.update(dict.fromkeys(str(key) for key in row))
        text = "\n".join(json.dumps(dict(row), ensure_ascii=False) for row in rows)
        # Read as a pasted dataset is (data-URL pictures too).
        dataset = read_dataset(text, format="jsonl", max_rows=len(rows))
        count = len(rows)
        return self._write(
            name,
            dataset,
            by=by,
            note=note or f"added {count} row{'s' if count != 1 else ''}",
            source=source,
            replace=False,
        )

    def _write(
        self, name: str, dataset: Dataset, *, by: str, note: str, source: str | None, replace: bool
    ) -> DatasetVersion:
        name = _clean_name(name)
        if not dataset.rows:
            raise DatasetStoreError("the dataset has no rows")
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    return self._write_in(conn, name, dataset, by=by, note=note, source=source, replace=replace)
            except IntegrityError:
                if attempt == 4:
                    raise
                # Another process wrote this dataset's next version (or created the name) at
                # the same moment: read again and take the next number.
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_in(
        self, conn: Any, name: str, dataset: Dataset, *, by: str, note: str, source: str | None, replace: bool
    ) -> DatasetVersion:
        now = utcnow()
        # A write first: it takes the dataset's row lock on PostgreSQL and the write lock on
        # SQLite before anything is read, so writers of one dataset take turns instead of
        # reading the same "latest version" (SQLite would refuse the later one's write at once).
        d = datasets_table.c
        conn.execute(update(datasets_table).where(d.name == name).values(name=d.name))
        found = conn.execute(select(d.id).where(d.name == name)).first()
        if found is None:
            dataset_id = new_id("ds")
            conn.execute(
                insert(datasets_table),
                {"id": dataset_id, "name": name, "created_at": now, "created_ts": now.timestamp(), "created_by": by},
            )
            latest, kept_columns, kept_rows = 0, (), 0
        else:
            dataset_id = found.id
            before = self._latest_row(conn, dataset_id)
            latest = before.version
            kept_columns = () if replace else tuple(json.loads(before.columns))
            kept_rows = 0 if replace else before.row_count
        version = latest + 1
        r = rows_table.c
        if replace and latest:
            conn.execute(
                update(rows_table).where(r.dataset_id == dataset_id, r.removed_in.is_(None)).values(removed_in=version)
            )
        first_row = (conn.execute(select(func.max(r.row_id)).where(r.dataset_id == dataset_id)).scalar() or 0) + 1
        values = [redact_json(dict(row)) for row in dataset.rows]
        conn.execute(
            insert(rows_table),
            [
                {
                    "dataset_id": dataset_id,
                    "row_id": first_row + index,
                    "added_in": version,
                    "removed_in": None,
                    "row_values": json.dumps(row, ensure_ascii=False),
                    "expected": _expected_text(row),
                    "source": source,
                }
                for index, row in enumerate(values)
            ],
        )
        pictures = [
            (first_row + index, position, picture)
            for index, row_pictures in enumerate(dataset.images)
            for position, picture in enumerate(row_pictures)
        ]
        for _row, _position, picture in pictures:
            keep_bytes(conn, picture, now)
        if pictures:
            conn.execute(
                insert(dataset_row_attachments_table),
                [
                    {
                        "dataset_id": dataset_id,
                        "row_id": row_id,
                        "position": position,
                        "sha256": p.ref.sha256,
                        "name": p.ref.name,
                    }
                    for row_id, position, p in pictures
                ],
            )
        columns = tuple(dict.fromkeys((*kept_columns, *dataset.columns)))
        made = DatasetVersion(
            dataset_id=dataset_id,
            name=name,
            version=version,
            created_at=now,
            created_by=by,
            columns=columns,
            row_count=kept_rows + len(values),
            note=note,
        )
        conn.execute(
            insert(versions_table),
            {
                "dataset_id": dataset_id,
                "version": version,
                "created_at": now,
                "created_ts": now.timestamp(),
                "created_by": by,
                "columns": json.dumps(list(columns), ensure_ascii=False),
                "row_count": made.row_count,
                "note": note,
            },
        )
        return made

    @staticmethod
    def _latest_row(conn: Any, dataset_id: str) -> Any:
        v = versions_table.c
        return conn.execute(
            select(versions_table).where(v.dataset_id == dataset_id).order_by(v.version.desc()).limit(1)
        ).first()

    # --- reading -------------------------------------------------------------------------

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset with its newest version, by name."""
        d, v = datasets_table.c, versions_table.c
        newest = select(v.dataset_id, func.max(v.version).label("version")).group_by(v.dataset_id).subquery()
        stmt = (
            select(datasets_table, versions_table)
            .join(newest, newest.c.dataset_id == d.id)
            .join(versions_table, and_(v.dataset_id == d.id, v.version == newest.c.version))
            .order_by(d.name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            DatasetInfo(
                id=row[0],
                name=row[1],
                created_at=row[2],
                created_by=row[4],
                latest=self._version(row[1], row[5:]),
            )
            for row in rows
        ]

    def names(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(datasets_table.c.name).order_by(datasets_table.c.name)).scalars())

    def versions(self, name: str) -> list[DatasetVersion]:
        """Every version of a dataset, the newest first."""
        dataset_id, clean = self._dataset_id(name)
        v = versions_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(versions_table).where(v.dataset_id == dataset_id).order_by(v.version.desc())
            ).all()
        return [self._version(clean, row) for row in rows]

    def version(self, name: str, version: int | None = None) -> DatasetVersion:
        """One version (None: the newest)."""
        found = self.versions(name)
        if version is None:
            return found[0]
        for item in found:
            if item.version == version:
                return item
        raise DatasetStoreError(
            f"the dataset {found[0].name!r} has no version {version} (versions 1 to {found[0].version})"
        )

    def load(self, name: str, version: int | None = None) -> Dataset:
        """The rows a version holds, as a `Dataset` an experiment is created from."""
        chosen = self.version(name, version)
        rows = self._rows(chosen)
        values = tuple(json.loads(row.row_values) for row in rows)
        images: tuple[tuple[Attachment, ...], ...] = ()
        if any(is_image_column(c) for c in chosen.columns):
            pictures = self._pictures(chosen.dataset_id, [row.row_id for row in rows])
            images = tuple(tuple(pictures.get(row.row_id, ())) for row in rows)
        return Dataset(columns=chosen.columns, rows=values, format="jsonl", lines=(), images=images)

    def export(self, name: str, version: int | None, format: ExportFormat) -> bytes:
        """A version as CSV (a header, then rows; JSON values as JSON text, which a CSV reads
        back as text) or JSONL (one object per line, JSON values kept), images as data URLs:
        `read_dataset` reads either back."""
        dataset = self.load(name, version)
        rows = [_with_data_urls(row, dataset, index) for index, row in enumerate(dataset.rows)]
        if format == "jsonl":
            return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
        if format != "csv":
            raise DatasetStoreError(f"a dataset exports as csv or jsonl, not {format!r}")
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(dataset.columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(column)) for column in dataset.columns])
        return out.getvalue().encode()

    def _rows(self, chosen: DatasetVersion) -> list[Any]:
        r = rows_table.c
        stmt = (
            select(r.row_id, r.row_values)
            .where(
                r.dataset_id == chosen.dataset_id,
                r.added_in <= chosen.version,
                or_(r.removed_in.is_(None), r.removed_in > chosen.version),
            )
            .order_by(r.row_id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).all())

    def _pictures(self, dataset_id: str, row_ids: list[int]) -> dict[int, list[Attachment]]:
        ra, at = dataset_row_attachments_table.c, attachments_table.c
        found: dict[int, list[Attachment]] = {}
        if not row_ids:
            return found
        stmt = (
            select(ra.row_id, ra.sha256, ra.name, at.media_type, at.size, at.data)
            .join(attachments_table, at.sha256 == ra.sha256)
            .where(ra.dataset_id == dataset_id, ra.row_id >= min(row_ids), ra.row_id <= max(row_ids))
            .order_by(ra.row_id, ra.position)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                ref = AttachmentRef(row.sha256, row.name, row.media_type, row.size)
                found.setdefault(row.row_id, []).append(Attachment(ref, bytes(row.data)))
        return found

    def _dataset_id(self, name: str) -> tuple[str, str]:
        clean = _clean_name(name)
        with self.engine.connect() as conn:
            found = conn.execute(select(datasets_table.c.id).where(datasets_table.c.name == clean)).scalar()
        if found is None:
            raise DatasetStoreError(f"there is no dataset named {clean!r}; import one or add rows to create it")
        return found, clean

    @staticmethod
    def _version(name: str, row: Any) -> DatasetVersion:
        dataset_id, version, created_at, _ts, created_by, columns, row_count, note = tuple(row)
        return DatasetVersion(
            dataset_id=dataset_id,
            name=name,
            version=version,
            created_at=created_at,
            created_by=created_by,
            columns=tuple(json.loads(columns)),
            row_count=row_count,
            note=note,
        )


def _with_data_urls(row: Mapping[str, Any], dataset: Dataset, index: int) -> dict[str, Any]:
    """The row with each image cell as its picture's data URL (pictures are in column order,
    blank cells have none)."""
    out = dict(row)
    pictures = iter(dataset.images[index] if index < len(dataset.images) else ())
    for column in dataset.image_columns:
        cell = out.get(column)
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            continue
        picture = next(pictures, None)
        if picture is not None:
            encoded = base64.b64encode(picture.data).decode()
            out[column] = f"data:{picture.ref.media_type};base64,{encoded}"
    return out


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- rows from real traffic ------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficRow:
    """What a logged request gives a dataset: its input as row values (`prompt`: the last user
    message's text, `messages`: the whole conversation as JSON, the experiment row's variables
    when an experiment sent it, `image`: the last message's first picture), the answer it got
    (None: none kept), and a note saying where they came from."""

    request_id: str
    values: dict[str, Any]
    answer: str | None
    note: str

    def row(self, *, answer_is_good: bool) -> dict[str, Any]:
        """The row to add: with the answer as `expected` when the person marked it good."""
        row = dict(self.values)
        if answer_is_good:
            if not (self.answer or "").strip():
                raise DatasetStoreError(
                    "this request has no answer to use as expected (it failed, or answers were not logged)"
                )
            row[EXPECTED_COLUMN] = self.answer
        return row


def row_values(messages: Sequence[ChatMessage], variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A dataset row's input columns from the messages a request sent (see `TrafficRow`)."""
    users = [m for m in messages if m.role == MessageRole.user]
    if not users:
        raise DatasetStoreError("the request has no user message to add")
    values: dict[str, Any] = dict(variables or {})
    values["prompt"] = users[-1].content
    values["messages"] = [{"role": m.role.value, "content": m.content} for m in messages if m.role != MessageRole.tool]
    pictures = [a for a in attachments_of(users[-1]) if a.ref.is_image]
    if pictures:
        values["image"] = pictures[0].url
    return values


def row_from_request(log: RequestLog, sessions: SessionStore | None, request_id: str) -> TrafficRow:
    """A logged request as a dataset row: its messages as the playground sent them when it sent
    it (a chat, a comparison, a blind round, an experiment), else as the request log kept them
    (a transcript of text; pictures named, not kept). Raises `DatasetStoreError` when the log
    kept no prompt (CONDUCTOR_LOG_PROMPTS=false)."""
    try:
        replay = replay_of(log, sessions, request_id)
    except ReplayError as error:
        raise DatasetStoreError(str(error)) from None
    records = log.records(request_id=request_id, limit=20)
    served = next((r for r in records if r.status == "ok"), None)
    answer = served.answer if served is not None else None
    if sessions is not None and (found := sessions.answer_for_request(request_id)) is not None:
        answer = found.content if found.status == "done" else answer  # the whole answer, as shown
    variables = _experiment_values(log, request_id)
    # What the replay note says of sampling parameters does not matter to a dataset row.
    said = [part for part in replay.note.split("; ") if "sampling parameters" not in part]
    note = "Input: " + "; ".join(said)
    if variables is not None:
        note += "; the experiment row's values as variables"
    return TrafficRow(request_id, row_values(replay.messages, variables), answer, note)


def _experiment_values(log: RequestLog, request_id: str) -> dict[str, Any] | None:
    """The values of the experiment row whose cell sent the request (None: no cell did)."""
    c, r, runs = cells_table.c, experiment_rows_table.c, runs_table.c
    stmt = (
        select(r.row_values)
        .select_from(cells_table)
        .join(runs_table, runs.id == c.run_id)
        .join(experiment_rows_table, and_(r.experiment_id == runs.experiment_id, r.row_index == c.row_index))
        .where(c.request_id == request_id)
    )
    with log.engine.connect() as conn:
        found = conn.execute(stmt).scalar()
    if found is None:
        return None
    values = json.loads(found)
    values.pop(EXPECTED_COLUMN, None)  # the answer marked good is the expected one
    return {k: v for k, v in values.items() if not is_image_column(k)}
