"""The request log as a file a person downloads: CSV or JSON.

JSON is exact. CSV is opened in spreadsheets, which run a cell that begins with ``=``,
``+``, ``-`` or ``@`` (and, in some, a tab or carriage return) as a formula: an answer
beginning ``=HYPERLINK("http://…","click")`` would become a live link, and worse formulas
can reach the network or other cells. So, as OWASP's CSV-injection advice says, such a text
cell gets a leading single quote, which spreadsheets show as text. Only text is touched:
numbers (a negative latency, say) are written as numbers, and every text column is
treated alike, because any of them (a model name, an error message) can carry what a
caller or an upstream sent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from ..config import redact
from ..models import AttemptRecord
from .schema import ATTEMPT_FIELDS
from .writer import REDACTED_FIELDS

__all__ = ["FORMULA_PREFIXES", "VOTE_FIELDS", "Verdicts", "export_records", "neutralize_formula"]

#: Columns added when the export carries votes: the verdict on this attempt's answer, and
#: the vote's id (a blind match's id). Empty where no vote judged it.
VOTE_FIELDS = ("vote", "vote_id")

#: Attempts -> {request_id: (verdict, vote id)}; the workbench's votes (arena.py) provide one.
Verdicts = Callable[[Sequence[AttemptRecord]], Mapping[str, tuple[str, str]]]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralize_formula(value: str) -> str:
    """`value` as a spreadsheet shows it: a leading quote when it would start a formula."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def export_records(
    records: Iterable[AttemptRecord],
    fmt: Literal["csv", "json"],
    *,
    verdicts: Verdicts | None = None,
    key_names: Mapping[str, str] | None = None,
) -> bytes:
    """CSV (RFC 4180) with a header, or a JSON array of objects with ISO 8601 timestamps. UTF-8.
    With `verdicts`, every row also says how a vote judged its answer (`VOTE_FIELDS`); only
    the attempt that answered carries it (a failed attempt of the same request was not judged).
    With `key_names` (gateway key id -> name), every row also says the name of the key it was
    made with (`key_name`, beside `key_id`; empty without one). Never the key itself: the log
    holds only its id."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}; use 'csv' or 'json'")
    records = list(records)
    rows = [_export_row(record) for record in records]
    fields = list(ATTEMPT_FIELDS)
    if key_names is not None:
        fields.insert(fields.index("key_id") + 1, "key_name")
        for row in rows:
            row["key_name"] = key_names.get(row["key_id"]) if row["key_id"] is not None else None
    if verdicts is not None:
        judged = verdicts(records)
        fields += VOTE_FIELDS
        for row, record in zip(rows, records, strict=True):
            verdict, vote_id = judged.get(record.request_id, (None, None)) if record.status == "ok" else (None, None)
            row["vote"], row["vote_id"] = verdict, vote_id
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False).encode("utf-8")
    buffer = io.StringIO()
    # RFC 4180's CRLF: the csv module then also quotes a cell holding a lone CR (with "\n"
    # it would write it bare, and readers would take it for the end of the row).
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_cell(value) for key, value in row.items()})
    return buffer.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralize_formula(value)
    return value  # numbers and booleans


def _export_row(record: AttemptRecord) -> dict[str, Any]:
    row = record.model_dump(mode="json")
    row["created_at"] = record.created_at.isoformat()
    # Redacted on write already; again here for rows written before a key was registered.
    for name in REDACTED_FIELDS:
        if row[name] is not None:
            row[name] = redact(row[name])
    return row
