r"""The request log, run against SQLite and PostgreSQL with the same tests (the `backend`
fixture, see tests/store_backends.py for how to point them at a PostgreSQL server)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from conductor_core.config import register_secret
from conductor_core.models import AttemptRecord, ProviderUsage, Vote
from conductor_core.store import AGGREGATE_COLUMNS, FRAME_COLUMNS, RequestLog, normalize_database_url
from conductor_core.store.writer import row_of
from tests.store_backends import POSTGRES_URL, REPO_ROOT, T0, Backend, full_record, make_record

# --- round trip ---------------------------------------------------------------------------


def test_round_trip_of_every_field(backend: Backend) -> None:
    log = backend.make()
    record = full_record()
    assert set(record.model_fields_set) == set(AttemptRecord.model_fields)  # the test covers every field
    # The writer's row is the record's __dict__: right while every field is a plain value.
    assert row_of(record) == {**record.model_dump(), "created_ts": record.created_at.timestamp()}
    sparse = AttemptRecord(request_id="req_sparse", provider="local", status="error", created_at=T0)
    assert log.write(record) is True
    assert log.write(sparse) is True
    found = {r.id: r for r in log.records()}
    assert found[record.id] == record
    assert found[record.id].created_at.tzinfo is not None
    assert found[record.id].created_at.utcoffset() == timedelta(0)  # read back as UTC
    assert found[sparse.id] == sparse
    assert log.write_errors == 0 and log.last_write_error is None


def test_default_sqlite_file_is_created_under_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "dir"
    log = RequestLog(data_dir=data_dir)
    assert not data_dir.exists()  # nothing touches the disk before first use
    assert log.write(make_record())
    assert (data_dir / "conductor.db").is_file()
    engine = create_engine(f"sqlite:///{data_dir / 'conductor.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    log.close()


def test_postgres_urls_are_rewritten_to_psycopg3() -> None:
    assert normalize_database_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_database_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_database_url("postgresql+psycopg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"
    log = RequestLog("postgres://user:hunter2secret@localhost/db")
    assert log.dialect == "postgresql" and "hunter2secret" not in repr(log)
    log.close()


def test_from_settings(tmp_path: Path) -> None:
    from conductor_core.config import load_settings

    settings = load_settings(_env_file=None, data_dir=tmp_path, log_prompts=False, database_url=None)
    log = RequestLog.from_settings(settings)
    assert log.log_prompts is False
    assert log.write(make_record(prompt="secret plan"))
    assert log.records()[0].prompt is None
    assert (tmp_path / "conductor.db").is_file()
    log.close()


# --- secrets and privacy --------------------------------------------------------------------


def test_canary_key_never_reaches_the_database_or_exports(backend: Backend) -> None:
    canary = "sk-Z6Bi-yRPnDp-ZwxfE0zOxlOI"
    plain_canary = "mm3zDW3V7npl50D4934LLm_e"  # a registered key with no well-known shape
    register_secret(canary)
    register_secret(plain_canary)
    log = backend.make()
    record = make_record(
        status="error",
        error_type="authentication",
        error_message=f"invalid key {canary} / {plain_canary}",
        prompt=f"my key is {canary} and {plain_canary}",
        answer=f"echo {canary}",
    )
    assert log.write(record)
    stored = log.records()[0]
    for text_value in (stored.error_message, stored.prompt, stored.answer):
        assert text_value and "[REDACTED]" in text_value
    raw = repr(backend.raw_rows("attempts"))
    assert canary not in raw and plain_canary not in raw
    for fmt in ("csv", "json"):
        exported = log.export(fmt).decode()
        assert canary not in exported and plain_canary not in exported
    if backend.name == "sqlite":
        log.close()  # checkpoint the WAL, then look at the bytes on disk
        for path in backend.data_dir.iterdir():
            data = path.read_bytes()
            assert canary.encode() not in data and plain_canary.encode() not in data


def test_log_prompts_false_drops_prompt_and_answer(backend: Backend) -> None:
    log = backend.make(log_prompts=False)
    assert log.write(make_record(prompt="the prompt text", answer="the answer text", error_message="kept"))
    stored = log.records()[0]
    assert stored.prompt is None and stored.answer is None
    assert stored.error_message == "kept"
    raw = repr(backend.raw_rows("attempts"))
    assert "the prompt text" not in raw and "the answer text" not in raw


# --- reading ----------------------------------------------------------------------------------


def _populate(log: RequestLog) -> list[AttemptRecord]:
    records = []
    for i in range(30):
        records.append(
            make_record(
                provider=("gemini", "openai", "local")[i % 3],
                status=("ok", "ok", "error", "incomplete", "ok")[i % 5],
                created_at=T0 + timedelta(seconds=20 * i),
                latency_ms=float(100 + i),
                cost_usd=None if i % 7 == 0 else 0.01 * i,
                output_tokens=i,
                input_tokens=2 * i,
            )
        )
    # Written out of time order: reads must order by time, not by insertion.
    for record in reversed(records):
        assert log.write(record)
    return records


def test_filters_and_order(backend: Backend) -> None:
    log = backend.make()
    records = _populate(log)
    every = log.records()
    assert [r.id for r in every] == [r.id for r in sorted(records, key=lambda r: r.created_at, reverse=True)]
    assert log.count() == 30

    since, until = T0 + timedelta(seconds=100), T0 + timedelta(seconds=300)  # since inclusive, until exclusive
    window = log.records(since=since, until=until)
    assert {r.id for r in window} == {r.id for r in records if since <= r.created_at < until}
    assert len(window) == 10 and log.count(since=since, until=until) == 10

    assert all(r.provider == "openai" for r in log.records(provider="openai"))
    assert log.count(provider="openai") == 10
    assert log.count(status="incomplete") == 6
    assert log.count(provider="gemini", status="ok") == sum(
        1 for r in records if r.provider == "gemini" and r.status == "ok"
    )
    newest = log.records(limit=3)
    assert [r.created_at for r in newest] == [T0 + timedelta(seconds=20 * i) for i in (29, 28, 27)]
    assert log.count(limit=3) == 3
    # A naive datetime means UTC.
    assert log.count(since=since.replace(tzinfo=None)) == log.count(since=since)


def test_frame_columns_dtypes_and_order(backend: Backend) -> None:
    log = backend.make()
    records = _populate(log)
    frame = log.frame()
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == 30
    assert isinstance(frame["created_at"].dtype, pd.DatetimeTZDtype) and str(frame["created_at"].dt.tz) == "UTC"
    assert frame["created_at"].is_monotonic_increasing  # oldest first
    assert frame["created_at"].iloc[0] == pd.Timestamp(T0)
    assert frame["latency_ms"].dtype == "float64" and frame["output_tokens"].dtype == "int64"
    assert isinstance(frame["provider"].dtype, pd.CategoricalDtype)
    assert sorted(frame["provider"].unique()) == ["gemini", "local", "openai"]
    assert frame["error_type"].isna().all()  # None in a label column is NaN
    assert frame.groupby("status", observed=True).size().to_dict() == {"error": 6, "incomplete": 6, "ok": 18}
    expected_latency = [r.latency_ms for r in sorted(records, key=lambda r: r.created_at)]
    assert frame["latency_ms"].tolist() == expected_latency
    assert frame["cost_usd"].isna().sum() == sum(1 for r in records if r.cost_usd is None)
    assert "prompt" not in frame.columns  # free text stays out of dashboards by default

    window = log.frame(
        since=T0 + timedelta(seconds=100), until=T0 + timedelta(seconds=300), columns=["provider", "status"]
    )
    assert list(window.columns) == ["provider", "status"] and len(window) == 10
    assert len(log.frame(since=T0 + timedelta(days=1))) == 0
    with pytest.raises(ValueError):
        log.frame(columns=["no_such_column"])


def test_frame_any_field(backend: Backend) -> None:
    log = backend.make()
    record = full_record()
    assert log.write(record)
    frame = log.frame(columns=["id", "streamed", "prompt", "created_at"])
    assert frame.to_dict("records")[0] == {
        "id": record.id,
        "streamed": True,
        "prompt": record.prompt,
        "created_at": pd.Timestamp(record.created_at),
    }


def test_write_many(backend: Backend) -> None:
    canary = "sk-Z6Bi-yRPnDp-ZwxfE0zOxlOI"
    register_secret(canary)
    log = backend.make(log_prompts=False)
    records = [
        make_record(error_message=f"bad {canary}", prompt="p", created_at=T0 + timedelta(seconds=i)) for i in range(500)
    ]
    assert log.write_many(records) == 500
    assert log.write_many([]) == 0
    assert log.count() == 500
    stored = log.records(limit=1)[0]
    assert stored.prompt is None and canary not in (stored.error_message or "")
    # All or nothing: one duplicate id rejects the batch, counted once, nothing raised.
    assert log.write_many([make_record(), records[0]]) == 0
    assert log.count() == 500 and log.write_errors == 1


def test_submitted_records_are_written_in_the_background_and_read_back(backend: Backend) -> None:
    log = backend.make()

    def submit(n: int) -> None:
        for i in range(50):
            log.submit(make_record(provider=f"p{n}", latency_ms=float(i)))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.count() == 200  # a read flushes the queue first
    assert {r.provider for r in log.records()} == {"p0", "p1", "p2", "p3"}
    assert log.write_errors == 0


def test_the_writer_lingers_to_batch_and_a_read_cuts_the_wait_short(backend: Backend) -> None:
    log, other = backend.make(), backend.make()
    log.linger_s = 60.0
    for i in range(10):
        log.submit(make_record(request_id=f"req_{i}"))
    assert other.count() == 0  # still gathering: another reader does not see them yet
    # A read in the writing process flushes: it does not wait out the 60 s.
    assert log.flush(timeout=20)
    assert other.count() == 10 and log.count() == 10


def test_a_failed_background_write_is_counted_not_raised(tmp_path: Path) -> None:
    log = RequestLog("postgresql://nobody:nothing@127.0.0.1:9/none", data_dir=tmp_path)
    log.submit(make_record())
    log.submit(make_record())
    assert log.flush(timeout=30) is False  # the writer tried and the database was not there
    assert log.write_errors == 2 and log.last_write_error
    assert log.flush(timeout=30) is False
    assert log.write_errors == 2  # retried, but each attempt counts once
    health = log.health()
    assert (health.pending, health.database_ok, health.written) == (2, False, 0)
    assert health.spool_files == 1 and health.spooled_bytes > 0
    log.close()  # the two attempts stay in the spool for the next process
    assert len(list((tmp_path / "spool").glob("*/*.spool"))) == 1


def test_empty_log_reads(backend: Backend) -> None:
    log = backend.make()
    assert log.records() == [] and log.count() == 0
    assert list(log.frame().columns) == list(FRAME_COLUMNS) and len(log.frame()) == 0
    assert len(log.aggregate(bucket_s=60)) == 0
    assert log.provider_totals() == {} and log.votes() == []
    assert json.loads(log.export("json")) == []
    assert log.export("csv").decode().strip().split(",")[0] == "id"


def test_export_csv_and_json_parse_back(backend: Backend) -> None:
    log = backend.make()
    records = _populate(log)
    log.write(full_record())
    by_id = {r.id: r for r in [*records, full_record()]}

    as_json = json.loads(log.export("json"))
    assert len(as_json) == 31
    for item in as_json:
        assert item["created_at"].endswith("+00:00")  # ISO 8601, UTC
        assert AttemptRecord.model_validate(item) == by_id[item["id"]]

    rows = list(csv.DictReader(io.StringIO(log.export("csv").decode("utf-8"))))
    assert len(rows) == 31
    assert list(rows[0]) == list(AttemptRecord.model_fields)
    for row in rows:
        original = by_id[row["id"]]
        assert datetime.fromisoformat(row["created_at"]) == original.created_at
        assert row["provider"] == original.provider and row["status"] == original.status
        assert int(row["output_tokens"]) == original.output_tokens
        assert (float(row["cost_usd"]) if row["cost_usd"] else None) == original.cost_usd
    assert next(r for r in rows if r["id"] == "att_everyfield")["prompt"] == full_record().prompt

    only_openai = json.loads(log.export("json", provider="openai", limit=4))
    assert len(only_openai) == 4 and {item["provider"] for item in only_openai} == {"openai"}
    with pytest.raises(ValueError):
        log.export("xml")  # type: ignore[arg-type]


def test_csv_export_neutralises_formulas_and_json_stays_exact(backend: Backend) -> None:
    """OWASP's CSV injection advice: a text cell a spreadsheet would run as a formula gets a
    leading quote. Numbers stay numbers, negative ones included; JSON is untouched."""
    log = backend.make()
    link = '=HYPERLINK("http://example.invalid/x","click")'
    risky = make_record(
        id="att_formula",
        answer=link,
        prompt="+1+2",
        error_message="-2+3",
        model="@SUM(A1:A2)",
        request_id="\tcmd",
        group_id="\r=1",
        latency_ms=-1.5,  # a clock step can make one negative: still a number
        ttft_ms=-0.25,
    )
    plain = make_record(id="att_plain", answer="a = b, and - c", prompt="user: hi", model="gpt-4o-mini")
    assert log.write(risky) and log.write(plain)
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(log.export("csv").decode("utf-8")))}
    row = rows["att_formula"]
    assert row["answer"] == "'" + link
    assert (row["prompt"], row["error_message"], row["model"]) == ("'+1+2", "'-2+3", "'@SUM(A1:A2)")
    assert (row["request_id"], row["group_id"]) == ("'\tcmd", "'\r=1")
    assert (row["latency_ms"], row["ttft_ms"], row["input_tokens"]) == ("-1.5", "-0.25", "10")
    assert float(row["latency_ms"]) == -1.5
    # Nothing else changes: a cell that does not start a formula is as it was.
    assert {k: rows["att_plain"][k] for k in ("answer", "prompt", "model")} == {
        "answer": "a = b, and - c",
        "prompt": "user: hi",
        "model": "gpt-4o-mini",
    }
    exact = {item["id"]: item for item in json.loads(log.export("json"))}
    assert AttemptRecord.model_validate(exact["att_formula"]) == risky
    assert exact["att_formula"]["answer"] == link and exact["att_formula"]["latency_ms"] == -1.5


def test_aggregate_is_bounded_and_matches_counts(backend: Backend) -> None:
    log = backend.make()
    records = _populate(log)  # 30 records, 20 s apart: 10 minutes
    agg = log.aggregate(bucket_s=60)
    assert list(agg.columns) == list(AGGREGATE_COLUMNS)
    assert len(agg) <= 3 * 10  # providers x buckets, whatever the number of rows
    assert agg["requests"].sum() == 30
    assert agg["ok"].sum() + agg["errors"].sum() + agg["incomplete"].sum() == 30
    assert agg["bucket"].is_monotonic_increasing and str(agg["bucket"].dt.tz) == "UTC"
    assert (agg["bucket"].dt.second == 0).all()

    # Compare every cell with the same numbers computed in Python.
    expected: dict[tuple[str, datetime], dict[str, Any]] = {}
    for r in records:
        start = datetime.fromtimestamp(int(r.created_at.timestamp()) // 60 * 60, tz=UTC)
        cell = expected.setdefault(
            (r.provider, start),
            {"requests": 0, "ok": 0, "errors": 0, "incomplete": 0, "lat": [], "cost": 0.0, "out": 0},
        )
        cell["requests"] += 1
        cell[{"ok": "ok", "error": "errors", "incomplete": "incomplete"}[r.status]] += 1
        if r.status == "ok":
            cell["lat"].append(r.latency_ms)
        cell["cost"] += r.cost_usd or 0.0
        cell["out"] += r.output_tokens
    assert len(agg) == len(expected)
    for row in agg.itertuples():
        cell = expected[(row.provider, row.bucket.to_pydatetime())]
        assert (row.requests, row.ok, row.errors, row.incomplete) == (
            cell["requests"],
            cell["ok"],
            cell["errors"],
            cell["incomplete"],
        )
        if cell["lat"]:
            assert row.mean_latency_ms == pytest.approx(sum(cell["lat"]) / len(cell["lat"]))
        else:
            assert pd.isna(row.mean_latency_ms)
        assert row.cost_usd == pytest.approx(cell["cost"])
        assert row.output_tokens == cell["out"]

    hourly = log.aggregate(bucket_s=3600)
    assert len(hourly) == 3 and hourly["requests"].tolist() == [10, 10, 10]
    ranged = log.aggregate(since=T0 + timedelta(seconds=120), until=T0 + timedelta(seconds=240), bucket_s=60)
    assert ranged["requests"].sum() == 6
    with pytest.raises(ValueError):
        log.aggregate(bucket_s=0)


# --- rollups: what the dashboard reads must equal what the rows say ----------------------


def _random_records(n: int, seed: int) -> list[AttemptRecord]:
    """Attempts over ~40 minutes with every combination the sums distinguish: statuses,
    missing latency/TTFT/cost, TTFT equal to latency, zero output tokens."""
    import random

    rng = random.Random(seed)
    records = []
    for i in range(n):
        status = rng.choice(["ok", "ok", "ok", "error", "incomplete"])
        # Failures are the provider's (timeout) or not (a bad request, a person stopping it).
        error_type = None if status == "ok" else rng.choice(["timeout", "bad_request", "cancelled"])
        latency = rng.choice([None, round(rng.uniform(20, 900), 3)])
        ttft = (
            rng.choice([None, latency, round(rng.uniform(1, 200), 3)])
            if latency is not None
            else rng.choice([None, 5.0])
        )
        records.append(
            make_record(
                id=f"att_r{seed}_{i:05d}",
                provider=rng.choice(["gemini", "openai", "local"]),
                status=status,
                error_type=error_type,
                created_at=T0 + timedelta(seconds=rng.uniform(0, 2400)),
                latency_ms=latency,
                ttft_ms=ttft,
                cost_usd=rng.choice([None, round(rng.uniform(0, 0.01), 6)]),
                input_tokens=rng.randint(0, 50),
                output_tokens=rng.choice([0, 1, 2, rng.randint(1, 300)]),
                # A first attempt, a retry or fallback, or a position not known (a request of its own).
                attempt_index=rng.choice([0, 0, 1, 2, None]),
            )
        )
    return records


def _expected_cells(
    records: list[AttemptRecord], bucket_s: int, since: datetime | None, until: datetime | None
) -> dict[Any, dict[str, Any]]:
    """The aggregate() contract computed in plain Python from the records."""
    cells: dict[Any, dict[str, Any]] = {}
    for r in records:
        ts = r.created_at.timestamp()
        if (since is not None and ts < since.timestamp()) or (until is not None and ts >= until.timestamp()):
            continue
        key = (r.provider, int(ts // bucket_s * bucket_s))
        c = cells.setdefault(
            key,
            {
                "requests": 0,
                "first_attempts": 0,
                "ok": 0,
                "errors": 0,
                "incomplete": 0,
                "not_at_fault": 0,
                "priced": 0,
                "lat": [],
                "ttft": [],
                "generation_tokens": 0,
                "generation_s": 0.0,
                "cost_usd": 0.0,
                "input_tokens": 0,
                "output_tokens": 0,
            },
        )
        c["requests"] += 1
        c["first_attempts"] += r.attempt_index in (0, None)
        c[{"ok": "ok", "error": "errors", "incomplete": "incomplete"}[r.status]] += 1
        c["not_at_fault"] += r.status != "ok" and r.error_type in ("bad_request", "cancelled", "busy", "circuit_open")
        c["priced"] += r.cost_usd is not None
        c["cost_usd"] += r.cost_usd or 0.0
        c["input_tokens"] += r.input_tokens
        c["output_tokens"] += r.output_tokens
        if r.status == "ok" and r.latency_ms is not None:
            c["lat"].append(r.latency_ms)
        if r.status == "ok" and r.ttft_ms is not None:
            c["ttft"].append(r.ttft_ms)
            # Tokens/s: the tokens after the first, over the time after the first (two at least).
            if r.latency_ms is not None and r.latency_ms > r.ttft_ms and r.output_tokens >= 2:
                c["generation_tokens"] += r.output_tokens - 1
                c["generation_s"] += (r.latency_ms - r.ttft_ms) / 1000
    return cells


def _assert_aggregate_matches(agg: pd.DataFrame, expected: dict[Any, dict[str, Any]]) -> None:
    assert list(agg.columns) == list(AGGREGATE_COLUMNS)
    assert {(row.provider, int(row.bucket.timestamp())) for row in agg.itertuples()} == set(expected)
    for row in agg.itertuples():
        c = expected[(row.provider, int(row.bucket.timestamp()))]
        for name in (
            "requests",
            "first_attempts",
            "ok",
            "errors",
            "incomplete",
            "not_at_fault",
            "priced",
            "generation_tokens",
            "input_tokens",
            "output_tokens",
        ):
            assert getattr(row, name) == c[name], name
        assert (row.latency_n, row.ttft_n) == (len(c["lat"]), len(c["ttft"]))
        for mean, values in ((row.mean_latency_ms, c["lat"]), (row.mean_ttft_ms, c["ttft"])):
            assert (pd.isna(mean) and not values) or mean == pytest.approx(sum(values) / len(values))
        assert row.generation_s == pytest.approx(c["generation_s"])
        assert row.cost_usd == pytest.approx(c["cost_usd"])


def _rollup_rows(backend: Backend) -> list[tuple[Any, ...]]:
    return sorted(
        tuple(round(float(v), 6) if isinstance(v, float) else v for v in row)
        for row in backend.raw_rows("attempt_rollups")
    )


def test_aggregate_and_count_equal_the_rows_at_any_window_edge(backend: Backend) -> None:
    log = backend.make()
    records = _random_records(400, seed=1)
    # Every write path keeps the rollups: write(), write_many(), submit() (the router's).
    for r in records[:50]:
        assert log.write(r)
    assert log.write_many(records[50:250]) == 200
    for r in records[250:]:
        log.submit(r)
    assert log.flush()
    edges = [None, T0 + timedelta(seconds=61.5), T0 + timedelta(seconds=600), T0 + timedelta(seconds=1234.25)]
    for since in edges:
        for until in [None, T0 + timedelta(seconds=62), T0 + timedelta(seconds=1800), T0 + timedelta(seconds=1799.9)]:
            if since is not None and until is not None and until <= since:
                continue
            for bucket_s in (60, 900, 45):  # 45 s: not whole minutes, so read from the rows
                _assert_aggregate_matches(
                    log.aggregate(since=since, until=until, bucket_s=bucket_s),
                    _expected_cells(records, bucket_s, since, until),
                )
            inside = [
                r
                for r in records
                if (since is None or r.created_at >= since) and (until is None or r.created_at < until)
            ]
            assert log.count(since=since, until=until) == len(inside)
            assert log.count(since=since, until=until, provider="openai", status="error") == sum(
                r.provider == "openai" and r.status == "error" for r in inside
            )
    assert log.count(status="cancelled") == 0 and log.count(limit=7) == 7
    # A window inside one minute reads only rows.
    assert log.count(since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=50)) == sum(
        10 <= (r.created_at - T0).total_seconds() < 50 for r in records
    )


def test_rollups_equal_a_rebuild_and_survive_a_failed_insert(backend: Backend) -> None:
    log = backend.make()
    records = _random_records(120, seed=2)
    assert log.write_many(records) == 120
    kept = _rollup_rows(backend)
    assert sum(row[2] for row in kept) == 120  # the requests column
    # A batch with a duplicate id fails as a whole: neither its rows nor its sums land.
    assert log.write_many([make_record(id="att_new_1"), records[0]], quiet=True) == 0
    assert _rollup_rows(backend) == kept and log.count() == 120
    log.rebuild_rollups()
    assert _rollup_rows(backend) == kept


def test_write_many_of_more_rows_than_one_statement_binds(backend: Backend) -> None:
    log = backend.make()
    records = [
        make_record(id=f"att_bulk_{i:06d}", provider=("a", "b")[i % 2], created_at=T0 + timedelta(seconds=i / 100))
        for i in range(70_000)
    ]
    assert log.write_many(records) == 70_000, log.last_write_error  # over PostgreSQL's 65,535 parameters
    assert {name: usage.total_requests for name, usage in log.provider_totals().items()} == {"a": 35_000, "b": 35_000}


def test_concurrent_writers_keep_the_rollups_exact(backend: Backend) -> None:
    """Writers in many threads add to the same provider-minute rows at once (upsert
    conflicts on every write on PostgreSQL): no increment may be lost."""
    log = backend.make()
    records = [make_record(provider=f"p{i % 3}", created_at=T0 + timedelta(seconds=i % 90)) for i in range(400)]
    threads = [threading.Thread(target=lambda chunk=records[n::8]: [log.write(r) for r in chunk]) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.write_errors == 0, log.last_write_error
    assert len(backend.raw_rows("attempts")) == 400
    totals = log.provider_totals()
    assert {name: usage.total_requests for name, usage in totals.items()} == {"p0": 134, "p1": 133, "p2": 133}
    assert sum(usage.output_tokens for usage in totals.values()) == 400 * 20


def test_provider_totals_match(backend: Backend) -> None:
    log = backend.make()
    records = _populate(log)
    totals = log.provider_totals()
    assert set(totals) == {"gemini", "openai", "local"}
    for provider, usage in totals.items():
        mine = [r for r in records if r.provider == provider]
        assert usage.total_requests == len(mine)
        assert usage.successful_requests == sum(r.status == "ok" for r in mine)
        assert usage.failed_requests == sum(r.status in ("error", "incomplete") for r in mine)
        assert usage.input_tokens == sum(r.input_tokens for r in mine)
        assert usage.output_tokens == sum(r.output_tokens for r in mine)
        assert usage.cost_usd == pytest.approx(sum(r.cost_usd or 0.0 for r in mine))
        assert isinstance(usage, ProviderUsage)


def test_gateway_overhead_sums_a_requests_attempts_and_reads_only_the_gateways_newest_rows(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conductor_core.store import reads

    log = backend.make()
    assert log.gateway_overhead() is None
    rows = [
        make_record(request_id=f"r{n}", source="gateway", overhead_ms=float(n), created_at=T0 + timedelta(seconds=n))
        for n in range(1, 6)
    ]
    rows.append(make_record(request_id="r3", source="gateway", status="error", overhead_ms=3.0, created_at=T0))
    rows.append(make_record(request_id="p", source="playground", overhead_ms=500.0, created_at=T0))
    rows.append(make_record(request_id="old", source="gateway", overhead_ms=None, created_at=T0))
    assert log.write_many(rows) == len(rows)
    found = log.gateway_overhead()
    # Requests of 1, 2, 3 + 3, 4, 5 ms.
    assert found is not None and found.requests == 5
    assert (found.p50_ms, found.p99_ms) == pytest.approx((4.0, 5.96))
    recent = log.gateway_overhead(since=T0 + timedelta(seconds=4))
    assert recent is not None and (recent.requests, recent.p50_ms) == (2, 4.5)
    monkeypatch.setattr(reads, "OVERHEAD_ROW_LIMIT", 2)  # the newest rows only: r5 and r4
    newest = log.gateway_overhead()
    assert newest is not None and (newest.requests, newest.p50_ms) == (2, 4.5)


def test_recent_for_metrics(backend: Backend) -> None:
    log = backend.make()
    records = _populate(log)
    log.write(make_record(provider="anthropic", created_at=T0 - timedelta(hours=1)))  # before `since`
    recent = log.recent_for_metrics(4, since=T0)
    assert [r.created_at for r in recent] == sorted(r.created_at for r in recent)  # oldest first
    for provider in ("gemini", "openai", "local"):
        mine = [r.id for r in recent if r.provider == provider]
        newest = [r.id for r in sorted((r for r in records if r.provider == provider), key=lambda r: r.created_at)][-4:]
        assert mine == newest
    assert all(r.provider != "anthropic" for r in recent)
    assert all(r.prompt is None and r.answer is None for r in recent)


# --- votes ------------------------------------------------------------------------------------


def test_votes_round_trip(backend: Backend) -> None:
    log = backend.make()
    first = Vote(group_id="grp_a", targets=["gemini", "openai/gpt-4o-mini"], winner="gemini", created_at=T0)
    second = Vote(
        group_id="grp_b", targets=["local", "anthropic", "openai"], winner="tie", created_at=T0 + timedelta(minutes=5)
    )
    assert log.write_vote(second) and log.write_vote(first)
    assert log.votes() == [first, second]  # oldest first
    assert log.votes(since=T0 + timedelta(minutes=1)) == [second]
    assert log.write_vote(first) is False  # duplicate id: counted, not raised
    assert log.write_errors == 1


# --- concurrency and failure ------------------------------------------------------------------


def test_concurrent_writers_from_20_threads(backend: Backend) -> None:
    log = backend.make()
    threads_n, per_thread = 20, 50
    barrier = threading.Barrier(threads_n)
    results: list[bool] = []
    errors: list[BaseException] = []
    results_lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                ok = log.write(make_record(request_id=f"req_{index}_{i}", provider=f"p{index % 4}"))
                with results_lock:
                    results.append(ok)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results.count(True) == threads_n * per_thread, log.last_write_error
    assert log.write_errors == 0
    assert log.count() == 1000


def test_two_instances_share_one_database(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    assert first.write(make_record(provider="gemini"))
    assert second.write(make_record(provider="openai"))
    assert second.write_vote(Vote(group_id="g", targets=["a", "b"], winner="a"))
    for log in (first, second):
        assert {r.provider for r in log.records()} == {"gemini", "openai"}
        assert len(log.votes()) == 1
        assert set(log.provider_totals()) == {"gemini", "openai"}


def test_processes_starting_at_once_share_one_database(backend: Backend) -> None:
    """Several processes create the tables at the same moment: none fails."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from conductor_core.store import RequestLog\n"
        "from conductor_core.models import AttemptRecord\n"
        "url = sys.argv[1] or None\n"
        "log = RequestLog(url, data_dir=Path(sys.argv[2]))\n"
        "ok = all(log.write(AttemptRecord(request_id='r', provider='p', status='ok')) for _ in range(5))\n"
        "print(log.last_write_error)\n"
        "sys.exit(0 if ok else 1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, backend.url or "", str(backend.data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    assert backend.make().count() == 20


def test_failing_write_returns_false_and_does_not_raise(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken: list[RequestLog] = []
    if backend.name == "sqlite":
        not_a_dir = tmp_path / "file"
        not_a_dir.write_text("a file where the data directory should be")
        broken.append(RequestLog(data_dir=not_a_dir))  # mkdir fails (even as root)
        (tmp_path / "db_dir" / "conductor.db").mkdir(parents=True)
        broken.append(RequestLog(data_dir=tmp_path / "db_dir"))  # SQLite cannot open a directory
    else:
        assert POSTGRES_URL
        closed_port = make_url(normalize_database_url(POSTGRES_URL)).set(
            host="127.0.0.1", port=1, password="pw-that-must-not-leak"
        )
        broken.append(RequestLog(closed_port.render_as_string(hide_password=False)))
    for log in broken:
        with caplog.at_level(logging.WARNING, logger="conductor.store"):
            assert log.write(make_record()) is False
            assert log.write(make_record()) is False
            assert log.write_vote(Vote(group_id="g", targets=["a", "b"], winner="a")) is False
        assert log.write_errors == 3
        assert log.last_write_error
        assert "pw-that-must-not-leak" not in log.last_write_error
        log.close()
    warnings = [r for r in caplog.records if r.name == "conductor.store" and r.levelno == logging.WARNING]
    assert len(warnings) == 3 * len(broken)
    assert all("pw-that-must-not-leak" not in r.getMessage() for r in warnings)


def test_write_error_messages_are_redacted(backend: Backend) -> None:
    canary = "sk-Z6Bi-yRPnDp-ZwxfE0zOxlOI"
    register_secret(canary)
    log = backend.make()
    # A duplicate primary key makes the database reject the row; the message it reports
    # must not carry anything the row contained.
    record = make_record(id=f"att_{canary}", prompt=canary)
    assert log.write(record)
    assert log.write(record) is False
    assert log.last_write_error and canary not in log.last_write_error


def test_write_after_close_returns_false(backend: Backend) -> None:
    log = backend.make()
    assert log.write(make_record())
    log.close()
    assert log.write(make_record()) is False
    assert log.write_errors == 1 and "closed" in (log.last_write_error or "")


def test_other_modules_keep_their_tables_next_to_the_log(backend: Backend) -> None:
    """Sessions and experiments live in the log's database: the migrations create their
    tables, `require_tables` checks them (twice is harmless) and names a table no migration
    creates; `SafeText` keeps any text, NUL included, on either backend."""
    from sqlalchemy import Column, MetaData, String, Table, insert, select

    from conductor_core.store import SafeText, SchemaError
    from conductor_core.workbench import experiments

    log = backend.make()
    log.require_tables(experiments.metadata)
    log.require_tables(experiments.metadata)
    extra = MetaData()
    notes = Table("test_notes", extra, Column("id", String(), primary_key=True), Column("body", SafeText()))
    with pytest.raises(SchemaError, match="no table test_notes: no migration creates it"):
        log.require_tables(extra)
    with log.engine.begin() as conn:
        notes.create(conn)  # as a migration would
    log.require_tables(extra)
    with log.engine.begin() as conn:
        conn.execute(insert(notes), {"id": "n1", "body": "nul\x00byte"})
    with log.engine.connect() as conn:
        body = conn.execute(select(notes.c.body)).scalar_one()
    assert body == ("nul\u2400byte" if backend.name == "postgresql" else "nul\x00byte")
