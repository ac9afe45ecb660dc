r"""The two databases the request-log tests run against, SQLite and PostgreSQL, as one fixture.

PostgreSQL is not started by these tests. Point ``CONDUCTOR_TEST_POSTGRES_URL`` at a
database the tests may create schemas in. On Debian 12 as root (what .ci/run does; the
role and database steps are idempotent, so a machine that already has them is fine)::

    apt-get install -y postgresql
    pg_ctlcluster 15 main start
    pg_isready -h 127.0.0.1 -p 5432 -t 30
    su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='conductor'\"" | grep -q 1 \
      || su postgres -c "psql -v ON_ERROR_STOP=1 -c \"CREATE ROLE conductor LOGIN PASSWORD 'conductor'\""
    su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='conductor_test'\"" | grep -q 1 \
      || su postgres -c "createdb -O conductor conductor_test"
    export CONDUCTOR_TEST_POSTGRES_URL=postgresql://conductor:conductor@127.0.0.1:5432/conductor_test

A private throwaway cluster works too (any free port)::

    mkdir -p /tmp/pg && chown postgres: /tmp/pg
    su postgres -c "/usr/lib/postgresql/15/bin/initdb -D /tmp/pg/data -U postgres --auth=trust"
    su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pg/data -l /tmp/pg/log \
      -o '-p 54329 -k /tmp/pg -c listen_addresses=127.0.0.1' -w start"
    (then CREATE ROLE / createdb as above with psql -h 127.0.0.1 -p 54329)

Without the variable the PostgreSQL cases are skipped, unless ``CONDUCTOR_REQUIRE_SERVICES=1``
(CI), where a missing database fails them.

Each PostgreSQL test gets its own schema (via ``search_path`` in the URL's ``options``),
dropped afterwards, so tests are independent and can run in parallel.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conductor_core.models import AttemptRecord
from conductor_core.store import RequestLog, normalize_database_url

POSTGRES_URL = os.environ.get("CONDUCTOR_TEST_POSTGRES_URL")
REQUIRE_SERVICES = os.environ.get("CONDUCTOR_REQUIRE_SERVICES") == "1"
REPO_ROOT = Path(__file__).resolve().parents[1]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Backend:
    name: str
    url: str | None  # None: the default SQLite file under data_dir
    data_dir: Path
    opened: list[RequestLog] = field(default_factory=list)

    def make(self, **kwargs: Any) -> RequestLog:
        log = RequestLog(self.url, data_dir=self.data_dir, **kwargs)
        self.opened.append(log)
        return log

    @property
    def sqlalchemy_url(self) -> str:
        if self.url is None:
            return f"sqlite:///{self.data_dir / 'conductor.db'}"
        return normalize_database_url(self.url)

    def raw_rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row as the database holds it, read without RequestLog."""
        engine = create_engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(f"SELECT * FROM {table}"))]
        finally:
            engine.dispose()


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of a fresh schema on CONDUCTOR_TEST_POSTGRES_URL (its `search_path`), dropped
    afterwards. Skips without the variable, or fails under CONDUCTOR_REQUIRE_SERVICES=1."""
    if not POSTGRES_URL:
        message = "PostgreSQL tests need CONDUCTOR_TEST_POSTGRES_URL (see the top of tests/store_backends.py)"
        if REQUIRE_SERVICES:
            pytest.fail(message + "; CONDUCTOR_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_database_url(POSTGRES_URL))
    try:
        with admin.begin() as conn:  # a set but unreachable URL fails here: that is a real error
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(normalize_database_url(POSTGRES_URL)).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        found = Backend("sqlite", None, tmp_path / "data")
        yield found
        for log in found.opened:
            log.close()
        return
    with postgres_schema() as url:
        found = Backend("postgresql", url, tmp_path / "data")
        yield found
        for log in found.opened:
            log.close()


def make_record(**overrides: Any) -> AttemptRecord:
    values: dict[str, Any] = {
        "request_id": "req_test",
        "provider": "gemini",
        "model": "gemini-2.5-flash",
        "status": "ok",
        "created_at": T0,
        "latency_ms": 120.5,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.001,
    }
    values.update(overrides)
    return AttemptRecord(**values)


def full_record() -> AttemptRecord:
    """Every field set to something other than its default."""
    return AttemptRecord(
        id="att_everyfield",
        created_at=datetime(2025, 3, 1, 13, 14, 15, 123456, tzinfo=timezone(timedelta(hours=2))),
        request_id="req_everyfield",
        provider="anthropic",
        model="claude-sonnet-4",
        route="compare",
        group_id="grp_1",
        source="gateway",
        streamed=True,
        status="incomplete",
        error_type="stream_interrupted",
        error_message="the stream broke after 12 tokens",
        input_tokens=123,
        output_tokens=45,
        latency_ms=987.654321,
        ttft_ms=54.321,
        cost_usd=0.000123456,
        prompt="user: Write a haiku about latency — ünïcödé 🚀",
        answer="Packets wait; the answer blooms",
        attempt_index=1,
        overhead_ms=0.375,
        key_id="key_0123456789abcdef0123",
    )
