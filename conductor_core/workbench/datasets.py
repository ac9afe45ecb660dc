"""Datasets: pasted text or an uploaded file, read as CSV or JSONL, whose columns become a
template's variables. An optional `expected` column holds what a good answer contains,
matches or equals (the run chooses which).

    dataset = read_dataset(uploaded.getvalue(), filename=uploaded.name, max_rows=settings.dataset_max_rows)
    dataset.columns, dataset.rows[0], dataset.expected(0)

Bad input gets an error a person can act on: a malformed CSV record or JSONL line names its
line (and, for JSON, the column); a dataset over the row limit is refused before anything
is sent, saying how many rows it has and which setting raises the limit.

CSV: the standard library's reader (quoted fields may hold delimiters, quotes and line
breaks), strict about quotes; the delimiter is the one of `,` `;` tab `|` that splits the
header line into the most fields (a .tsv file is tab-separated). Every record must have as
many fields as the header. JSONL: one JSON object per line (blank lines skipped); a file
whose text starts with `[` is read as one JSON array of objects. Keys missing from a row are
missing values (a template that uses one says which row); numbers and nested values are
kept as JSON.

Images: a column named `image` or ending in `_image` (`receipt_image`) is an image column.
Each cell is a data URL (`data:image/png;base64,...`) or, when the dataset is uploaded as a
.zip holding one CSV/JSONL file and the pictures, a path inside the zip (relative to the zip's
root or to the data file's folder). A blank cell sends no image. The cell's value becomes the
image's name; the bytes are in `Dataset.images` (row by row, in column order), each checked as
an attachment is (PNG/JPEG/WebP/GIF by its content, at most 5 MB): a refused one names its row,
its column and what to change.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import posixpath
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..models import IMAGE_MEDIA_TYPES, MAX_ATTACHMENT_BYTES, describe_size
from .attachments import Attachment, AttachmentError, from_upload

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetTooLargeError",
    "read_dataset",
    "is_image_column",
    "DEFAULT_MAX_ROWS",
    "EXPECTED_COLUMN",
    "DATA_EXTENSIONS",
]

DEFAULT_MAX_ROWS = 1000  # Settings.dataset_max_rows (CONDUCTOR_DATASET_MAX_ROWS) overrides it
EXPECTED_COLUMN = "expected"
_DELIMITERS = (",", ";", "\t", "|")
_LIMIT_SETTING = "CONDUCTOR_DATASET_MAX_ROWS"
#: The names of a file that holds rows (inside a zip too).
DATA_EXTENSIONS = ("csv", "tsv", "txt", "jsonl", "ndjson", "json")


def is_image_column(name: str) -> bool:
    """`image`, `receipt_image`: a column whose cells are pictures sent after the prompt's text."""
    lowered = name.strip().lower()
    return lowered == "image" or lowered.endswith("_image")


Format = Literal["csv", "jsonl"]


class DatasetError(ValueError):
    """The dataset must change. `line` (1-based) and `column` say where, when known."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        where = f"line {line}" + (f", column {column}" if column is not None else "") if line is not None else ""
        super().__init__(f"{where}: {message}" if where else message)


class DatasetTooLargeError(DatasetError):
    def __init__(self, rows: int, limit: int) -> None:
        self.rows = rows
        self.limit = limit
        super().__init__(
            f"the dataset has {rows:,} rows; the limit is {limit:,}. Split it, or raise the limit "
            f"with the setting {_LIMIT_SETTING}. Nothing was sent."
        )


@dataclass(frozen=True)
class Dataset:
    """Rows of values by column name. `lines[i]` is the line row i starts on in the source."""

    columns: tuple[str, ...]
    rows: tuple[Mapping[str, Any], ...]
    format: Format
    lines: tuple[int, ...] = field(default=())
    #: Per row, its image columns' pictures in column order (empty when it has no image column).
    images: tuple[tuple[Attachment, ...], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if is_image_column(c))

    @property
    def has_expected(self) -> bool:
        return EXPECTED_COLUMN in self.columns

    def expected(self, index: int) -> str | None:
        """Row `index`'s expected answer (0-based), or None when it has none (blank counts as none)."""
        value = self.rows[index].get(EXPECTED_COLUMN)
        if value is None:
            return None
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text if text.strip() else None


def read_dataset(
    data: str | bytes,
    *,
    filename: str | None = None,
    format: Format | None = None,
    max_rows: int | None = None,
) -> Dataset:
    """Read pasted text or a file's bytes. The format is `format`, else the file's extension
    (.csv/.tsv/.txt, .jsonl/.ndjson/.json), else JSON when the text starts with `{` or `[`.
    A .zip (by its bytes) holds one such file and the images its image columns name."""
    limit = DEFAULT_MAX_ROWS if max_rows is None else max_rows
    if isinstance(data, bytes) and data.startswith(b"PK\x03\x04"):
        return _read_zip(data, filename or "the zip", format, limit)
    dataset = _read_rows(data, filename, format, limit)
    return _with_images(dataset, lambda path: None)  # no zip: a path names no file


def _read_rows(data: str | bytes, filename: str | None, format: Format | None, limit: int) -> Dataset:
    text = _decode(data)
    if not text.strip():
        raise DatasetError("the dataset is empty: paste or upload CSV (a header line, then rows) or JSONL")
    kind = format or _guess_format(text, filename)
    dataset = _read_jsonl(text, limit) if kind == "jsonl" else _read_csv(text, limit, tab=_is_tsv(filename))
    if not dataset.rows:
        raise DatasetError("the dataset has a header but no rows")
    return dataset


# --- images ----------------------------------------------------------------------------------


def _read_zip(data: bytes, zip_name: str, format: Format | None, limit: int) -> Dataset:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename: info for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{zip_name} is not a readable zip ({exc})") from None
    tables = [
        name
        for name in members
        if name.rsplit(".", 1)[-1].lower() in DATA_EXTENSIONS and not name.startswith("__MACOSX/")
    ]
    if len(tables) != 1:
        found = f"found {len(tables)}: {', '.join(sorted(tables))}" if tables else "found none"
        raise DatasetError(
            f"a zip dataset holds exactly one CSV or JSONL file beside its images ({found}); put the rows in one file"
        )
    (table,) = tables
    folder = posixpath.dirname(table)

    def open_image(path: str) -> bytes | str:
        """The bytes of the image at `path` (as a cell names it), or why not."""
        wanted = posixpath.normpath(path.strip().replace("\\", "/").lstrip("/"))
        for candidate in (posixpath.normpath(posixpath.join(folder, wanted)), wanted):
            info = members.get(candidate)
            if info is None:
                continue
            if info.file_size > MAX_ATTACHMENT_BYTES:
                return (
                    f"{candidate} is {describe_size(info.file_size)}: at most "
                    f"{MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB per image; make it smaller"
                )
            return archive.read(info)
        return f"the zip has no file {path.strip()!r}; add it to the zip or correct the path"

    with archive:
        dataset = _read_rows(archive.read(table), table, format, limit)
        return _with_images(dataset, open_image)


#: A cell's path -> the file's bytes, why it cannot be read, or None (no zip to read it from).
OpenImage = Callable[[str], "bytes | str | None"]


def _with_images(dataset: Dataset, open_image: OpenImage) -> Dataset:
    """The dataset with its image columns read: each cell's picture checked and kept once by
    content, the cell's value replaced by the picture's name."""
    columns = dataset.image_columns
    if not columns:
        return dataset
    by_hash: dict[str, Attachment] = {}  # the same picture in many rows: one copy in memory
    rows: list[dict[str, Any]] = []
    images: list[tuple[Attachment, ...]] = []
    for index, row in enumerate(dataset.rows):
        values = dict(row)
        found: list[Attachment] = []
        for column in columns:
            cell = values.get(column)
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                continue
            picture = _image(cell, column, index, open_image, dataset)
            shared = by_hash.setdefault(picture.ref.sha256, picture)
            values[column] = picture.ref.name
            found.append(Attachment(picture.ref, shared.data))
        rows.append(values)
        images.append(tuple(found))
    return Dataset(dataset.columns, tuple(rows), dataset.format, dataset.lines, tuple(images))


def _name_of(cell: Any) -> str:
    return cell.strip() if isinstance(cell, str) and not cell.strip().startswith("data:") else ""


def _image(cell: Any, column: str, index: int, open_image: OpenImage, dataset: Dataset) -> Attachment:
    where = f"row {index + 1}, column {column}"
    line = dataset.lines[index] if index < len(dataset.lines) else None
    if not isinstance(cell, str):
        raise DatasetError(f"{where}: an image is a data URL or a path inside the zip, not JSON", line=line)
    text = cell.strip()
    if text.startswith("data:"):
        head, _, payload = text.partition(",")
        if not head.endswith(";base64") or not payload:
            raise DatasetError(f"{where}: a data URL reads data:image/png;base64,<the bytes in base64>", line=line)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise DatasetError(
                f"{where}: the data URL's base64 is not valid; encode the file again", line=line
            ) from None
        name = f"{column}-{index + 1}"
    else:
        opened = open_image(text)
        if opened is None:
            raise DatasetError(
                f"{where}: {text[:80]!r} is not a data URL; upload the dataset as a .zip holding "
                "this file and the images, or write the image as data:image/png;base64,...",
                line=line,
            )
        if isinstance(opened, str):
            raise DatasetError(f"{where}: {opened}", line=line)
        name, data = text, opened
    try:
        picture = from_upload(name, data)
    except AttachmentError as error:
        raise DatasetError(f"{where}: {error}; use a PNG, JPEG, WebP or GIF image of at most 5 MB", line=line) from None
    if picture.ref.media_type not in IMAGE_MEDIA_TYPES:
        raise DatasetError(f"{where}: {name} is a PDF, not an image; an image column takes pictures", line=line)
    if not _name_of(cell):
        # A data URL's picture is named by where it is, with its type's extension.
        extension = picture.ref.media_type.split("/")[1].replace("jpeg", "jpg")
        picture = Attachment(replace(picture.ref, name=f"{name}.{extension}"), picture.data)
    return picture


def _decode(data: str | bytes) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(
            "the file is not UTF-8 text; save it as UTF-8 (CSV UTF-8 in a spreadsheet)", line=line
        ) from None


def _guess_format(text: str, filename: str | None) -> Format:
    suffix = (filename or "").rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix in ("csv", "tsv", "txt"):
        return "csv"
    return "jsonl" if text.lstrip()[:1] in ("{", "[") else "csv"


def _is_tsv(filename: str | None) -> bool:
    return filename is not None and filename.lower().endswith(".tsv")


def _too_large(count: int, limit: int) -> None:
    if count > limit:
        raise DatasetTooLargeError(count, limit)


# --- CSV -------------------------------------------------------------------------------------


def _delimiter(text: str) -> str:
    header = next(iter(text.splitlines()), "")
    best, fields = ",", 1
    for candidate in _DELIMITERS:
        try:
            count = len(next(csv.reader([header], delimiter=candidate)))
        except (csv.Error, StopIteration):
            continue
        if count > fields:
            best, fields = candidate, count
    return best


def _read_csv(text: str, limit: int, *, tab: bool) -> Dataset:
    delimiter = "\t" if tab else _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    count = 0
    record_start = 1
    while True:
        record_start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problem = str(exc)
            if "end of data" in problem or "EOF" in problem:
                problem = 'a quoted field that is never closed (a " is missing)'
            raise DatasetError(f"malformed CSV: {problem}", line=record_start) from None
        if not record or all(not cell.strip() for cell in record):
            continue  # blank lines between records
        if header is None:
            header = _header(record, record_start)
            continue
        if len(record) != len(header):
            raise DatasetError(
                f"{len(record)} field(s), but the header has {len(header)} ({', '.join(header)}); "
                "quote a field that contains the delimiter",
                line=record_start,
            )
        count += 1
        if count <= limit:
            rows.append(dict(zip(header, record, strict=True)))
            lines.append(record_start)
    _too_large(count, limit)
    if header is None:
        raise DatasetError("the dataset is empty")
    return Dataset(columns=tuple(header), rows=tuple(rows), format="csv", lines=tuple(lines))


def _header(record: list[str], line: int) -> list[str]:
    names = [cell.strip() for cell in record]
    for position, name in enumerate(names, 1):
        if not name:
            raise DatasetError("a header field is empty: every column needs a name", line=line, column=position)
    seen: set[str] = set()
    for position, name in enumerate(names, 1):
        if name in seen:
            raise DatasetError(f"the column name {name!r} appears twice in the header", line=line, column=position)
        seen.add(name)
    return names


# --- JSONL -----------------------------------------------------------------------------------


def _read_jsonl(text: str, limit: int) -> Dataset:
    if text.lstrip().startswith("["):
        return _read_json_array(text, limit)
    columns: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    count = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"not valid JSON: {exc.msg}", line=number, column=exc.colno) from None
        _check_object(value, number)
        count += 1
        if count <= limit:
            columns.update(dict.fromkeys(value))
            rows.append(value)
            lines.append(number)
    _too_large(count, limit)
    return Dataset(columns=tuple(columns), rows=tuple(rows), format="jsonl", lines=tuple(lines))


def _read_json_array(text: str, limit: int) -> Dataset:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not valid JSON: {exc.msg}", line=exc.lineno, column=exc.colno) from None
    if not isinstance(values, list):
        raise DatasetError("a JSON dataset is an array of objects, or one object per line (JSONL)", line=1)
    _too_large(len(values), limit)
    columns: dict[str, None] = {}
    for position, value in enumerate(values, 1):
        if not isinstance(value, dict):
            raise DatasetError(f'item {position} of the array is not an object {{"column": value}}')
        columns.update(dict.fromkeys(value))
    return Dataset(columns=tuple(columns), rows=tuple(values), format="jsonl", lines=())


_KINDS: dict[type, str] = {list: "an array", str: "a string"}


def _check_object(value: Any, line: int) -> None:
    if not isinstance(value, dict):
        kind = _KINDS.get(type(value), f"a {type(value).__name__}")
        raise DatasetError(f'is {kind}; each line must be one JSON object such as {{"question": "..."}}', line=line)
