r"""Schema migrations (conductor_core/store/migrate.py, migrations/), on SQLite and PostgreSQL.

The databases in tests/fixtures/previous_release/ were made by the release before migrations,
with its own code (see make_fixture.py there): opening them must upgrade them in place and
keep every row. A fresh database must be built by the migrations alone, to exactly what the
models describe (an autogenerate comparison: a column added to a model without a migration
fails here). A database newer than the code is a clear error, not an outage.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Column, MetaData, create_engine, inspect, text
from sqlalchemy.engine import make_url

from conductor_core.config import load_settings
from conductor_core.errors import NOT_PROVIDER_FAULTS
from conductor_core.models import AttemptRecord, register_provider_name
from conductor_core.router import Conductor
from conductor_core.store import (
    DatabaseNewerError,
    RequestLog,
    SchemaError,
    SchemaMismatchError,
    migrate,
    normalize_database_url,
    rollup_rules,
    schema,
)
from conductor_core.store.migrations.baseline import baseline_tables
from conductor_core.store.writer import REJECTED_FILE
from conductor_core.workbench import attachments
from conductor_core.workbench.arena import Arena
from conductor_core.workbench.dataset_store import DatasetStore
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import Check, CheckKind, ExperimentStore, JudgeTarget, JudgeVote
from conductor_core.workbench.exports import run_report, to_markdown
from conductor_core.workbench.prompts import PromptContent, PromptStore
from conductor_core.workbench.sessions import SessionStore
from conductor_core.workbench.variants import Variant
from gateway.main import create_app
from tests.store_backends import REPO_ROOT, T0, make_record, postgres_schema

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "previous_release"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FLOAT_TOLERANCE = 1e-9
GATEWAY_KEY = "Rb5wKq8ZtN2vLm7XcJ4hPy9GdS3fTa6U"
MODELS = migrate.model_metadata  # the real one, for tests that stand another in
# A 1x1 PNG.
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f6a2d10000000049454e44ae426082"
)


@dataclass
class Place:
    """A database for one test: `url` as RequestLog takes it (None: the SQLite file under
    `data_dir`), `sqlalchemy_url` to look at it directly."""

    backend: str
    url: str | None
    data_dir: Path

    @property
    def sqlalchemy_url(self) -> str:
        if self.url is None:
            return f"sqlite:///{self.data_dir / 'conductor.db'}"
        return normalize_database_url(self.url)

    def open_log(self, **kwargs: Any) -> RequestLog:
        return RequestLog(self.url, data_dir=self.data_dir, **kwargs)

    def execute(self, *statements: str) -> None:
        engine = create_engine(self.sqlalchemy_url)
        try:
            with engine.begin() as conn:
                for statement in statements:
                    conn.execute(text(statement))
        finally:
            engine.dispose()

    def rows(self, table: str) -> list[dict[str, Any]]:
        engine = create_engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(text(f"SELECT * FROM {table}"))]
        finally:
            engine.dispose()

    def revisions(self) -> tuple[str, ...]:
        engine = create_engine(self.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                return migrate.current_revisions(conn)
        finally:
            engine.dispose()

    def engine(self) -> Any:
        return create_engine(self.sqlalchemy_url)


def _schema_name(url: str) -> str:
    options = make_url(url).query["options"]
    assert isinstance(options, str) and options.startswith("-csearch_path=")
    return options.split("=", 1)[1]


def load_previous_release_dump(url: str) -> None:
    """The pg_dump of the previous release's database, into the (empty) schema of `url`."""
    sql = (FIXTURES / "postgresql.sql").read_text()
    # psql's own commands (\restrict) are not SQL; the schema exists already, under another name.
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("\\"))
    source = MANIFEST["postgresql_schema"]
    sql = sql.replace(f"CREATE SCHEMA {source};", "").replace(f"{source}.", f"{_schema_name(url)}.")
    engine = create_engine(normalize_database_url(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """An empty database."""
    if request.param == "sqlite":
        yield Place("sqlite", None, tmp_path / "data")
        return
    with postgres_schema() as url:
        yield Place("postgresql", url, tmp_path / "data")


@pytest.fixture(params=["sqlite", "postgresql"])
def previous_release(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Place, Place]]:
    """Two copies of the previous release's database: the one a test opens, and one left
    untouched to compare with."""
    if request.param == "sqlite":
        pair = []
        for name in ("opened", "untouched"):
            found = Place("sqlite", None, tmp_path / name)
            found.data_dir.mkdir()
            shutil.copyfile(FIXTURES / "conductor.db", found.data_dir / "conductor.db")
            pair.append(found)
        yield pair[0], pair[1]
        return
    with postgres_schema() as opened, postgres_schema() as untouched:
        for url in (opened, untouched):
            load_previous_release_dump(url)
        yield Place("postgresql", opened, tmp_path / "opened"), Place("postgresql", untouched, tmp_path / "untouched")


def _key(table: str) -> list[str]:
    return [column.name for column in baseline_tables().tables[table].primary_key]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    return bool(a == b)


def _expected_attempt_index(attempts: list[dict[str, Any]]) -> dict[str, int]:
    """Each attempt's position within its request, by time (then id)."""
    by_request: dict[str, list[dict[str, Any]]] = {}
    for row in attempts:
        by_request.setdefault(row["request_id"], []).append(row)
    return {
        row["id"]: position
        for rows in by_request.values()
        for position, row in enumerate(sorted(rows, key=lambda r: (r["created_ts"], r["id"])))
    }


# --- the history itself ------------------------------------------------------------------------


def test_head_is_the_one_head_of_the_history_and_files_are_named_by_revision() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrate.SCRIPT_DIR))
    assert script.get_heads() == [migrate.HEAD]  # one line of history; HEAD names its end
    assert script.get_bases() == [migrate.BASELINE]
    for revision in script.walk_revisions():
        assert Path(revision.path).name.startswith(f"{revision.revision}_")


def test_the_current_rollup_rule_excuses_what_the_errors_module_does() -> None:
    """Changing NOT_PROVIDER_FAULTS changes how rollups sum: that is a new rule and a
    migration that rebuilds them (rollup_rules.py), not a silent change to old minutes."""
    assert rollup_rules.EXCUSED[rollup_rules.CURRENT] == NOT_PROVIDER_FAULTS
    assert list(schema.ROLLUP_SUMS) == [c.name for c in schema.attempt_rollups.columns][2:]


# --- the previous release's databases --------------------------------------------------------


def test_the_baseline_is_exactly_the_previous_release_schema(previous_release: tuple[Place, Place], tmp_path) -> None:
    _, untouched = previous_release
    if untouched.backend == "sqlite":
        fresh = Place("sqlite", None, tmp_path / "fresh")
        fresh.data_dir.mkdir()
        engine = fresh.engine()
        migrate.upgrade(engine, "fresh", target=migrate.BASELINE)
        engine.dispose()
        assert _reflected(fresh) == _reflected(untouched)
        return
    with postgres_schema() as url:
        fresh = Place("postgresql", url, tmp_path / "fresh")
        engine = fresh.engine()
        migrate.upgrade(engine, "fresh", target=migrate.BASELINE)
        engine.dispose()
        assert _reflected(fresh) == _reflected(untouched)


def _reflected(place: Place) -> dict[str, Any]:
    """Every table's columns (in order, with type, nullability and server default), primary
    key, indexes, foreign keys and unique constraints, as the database reports them."""
    engine = place.engine()
    try:
        found = inspect(engine)
        tables: dict[str, Any] = {}
        for name in sorted(set(found.get_table_names()) - {"alembic_version"}):
            tables[name] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in found.get_columns(name)
                ],
                "primary_key": found.get_pk_constraint(name)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(name)
                ),
                "foreign_keys": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                    for f in found.get_foreign_keys(name)
                ),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(name)),
            }
        return tables
    finally:
        engine.dispose()


def test_a_previous_release_database_upgrades_in_place_and_keeps_every_row(
    previous_release: tuple[Place, Place],
) -> None:
    opened, untouched = previous_release
    counts = MANIFEST[opened.backend]
    assert all(counts.values()), counts  # the fixture has rows in every table
    for name in ("alpha", "beta", "gamma"):  # the scripted providers the fixture's sessions name
        register_provider_name(name)
    assert opened.revisions() == ()  # made before migrations

    log = opened.open_log()
    try:
        log.open()
        assert opened.revisions() == (migrate.HEAD,)
        engine = opened.engine()
        assert migrate.differences(engine) == []  # exactly what the models describe
        engine.dispose()

        # Every row of every table, with every value it had.
        for table, count in sorted(counts.items()):
            if table == "conductor_schema":  # its one fact (rollups version 2) is Alembic's now
                continue
            before, after = untouched.rows(table), opened.rows(table)
            assert len(before) == len(after) == count, table
            key = _key(table)
            kept = {tuple(row[k] for k in key): row for row in after}
            for row in before:
                upgraded = kept[tuple(row[k] for k in key)]
                for name, value in row.items():
                    assert _same(upgraded[name], value), (table, name, row, upgraded)
        assert "conductor_schema" not in set(inspect(create_engine(opened.sqlalchemy_url)).get_table_names())

        # The new columns: positions of old attempts backfilled; requests counted in the rollups.
        attempts = opened.rows("attempts")
        expected = _expected_attempt_index(attempts)
        assert {row["id"]: row["attempt_index"] for row in attempts} == expected
        assert max(expected.values()) >= 2  # the fixture has a request with retries or fallbacks
        assert all(row["overhead_ms"] is None for row in attempts)
        requests = len({row["request_id"] for row in attempts})
        assert requests < len(attempts)
        rollups = opened.rows("attempt_rollups")
        assert sum(row["first_attempts"] for row in rollups) == requests
        assert sum(row["requests"] for row in rollups) == len(attempts)

        # And through the public API, as every page and endpoint reads them.
        assert len(log.records()) == counts["attempts"]
        totals = log.usage_totals()
        assert (totals.total_requests, totals.total_attempts) == (requests, len(attempts))
        assert len(log.votes()) == counts["votes"]
        sessions = SessionStore.for_log(log)
        listed = sessions.recent(limit=100)
        assert len(listed) == counts["wb_sessions"]
        turns = 0
        for info in listed:
            conversation = sessions.conversation(info.id)
            assert conversation is not None and conversation.turns
            turns += len(conversation.turns)
            # Older answers made no tool calls, and older turns continue nothing.
            assert not any(
                t.continues or a.tool_calls or a.tool_results for t in conversation.turns for a in t.chosen.values()
            )
        assert turns >= 2
        for table, column in (("wb_answers", "tool_calls"), ("wb_answers", "tool_results"), ("wb_turns", "continues")):
            assert all(row[column] is None for row in opened.rows(table)), (table, column)
        # The attachment tables (0007) are there, empty, and take an old session's new image turn.
        assert opened.rows("attachments") == [] and opened.rows("wb_turn_attachments") == []
        picture = attachments.from_upload("dot.png", PNG_1PX)
        turn, _ = sessions.add_turn(listed[0].id, "and this?", parent_id=None, attachments=[picture, picture])
        reopened = sessions.conversation(listed[0].id)
        assert reopened is not None
        kept = next(t for t in reopened.turns if t.id == turn.id)
        assert [a.data for a in reopened.attachments(kept)] == [PNG_1PX, PNG_1PX]
        assert len(opened.rows("attachments")) == 1  # the same bytes twice: stored once
        arena = Arena(log)
        assert len(arena.votes()) == 1 and arena.reveal(arena.votes()[0].match_id).answers
        experiments = ExperimentStore(log)
        (experiment,) = experiments.experiments()
        (run,) = experiments.runs(experiment.id)
        assert len(experiments.cells(run.id)) == counts["experiment_cells"]
        assert sum(stats.thumbs_up + stats.thumbs_down for stats in experiments.stats(run.id)) == 2
        # A run from before several checks reads as one check of its kind, each cell's verdict
        # its `passed`; its cells called no tool.
        assert run.checks == (Check(kind=CheckKind.contains),)
        old_cells = experiments.cells(run.id)
        assert all(cell.checks is None and cell.tool_calls is None for cell in old_cells)
        for stats in experiments.stats(run.id):
            (only,) = stats.checks
            mine = [c for c in old_cells if c.variant == stats.variant and c.status != "cancelled"]
            assert (only.checked, only.passed) == (stats.checked, stats.passed)
            assert only.passed == sum(c.passed is True for c in mine) and only.checked > 0
        assert "check: contains" in to_markdown(run_report(experiments, run.id))
        # Saved datasets (0011): an old run came from no saved dataset; a new one saves and loads.
        assert run.dataset_label is None
        saved = DatasetStore(log).add_rows("after the upgrade", [{"q": "1"}], by="local")
        assert DatasetStore(log).load(saved.name, saved.version).rows == ({"q": "1"},)
        # The experiment rows' pictures (0008): the old experiment has none; a new one over an
        # image column keeps each row's picture, the bytes shared with the session's turn above.
        assert opened.rows("experiment_row_attachments") == []
        assert experiments.images(experiment.id, 0, 10) == {}
        url = f'"{picture.url}"'
        pictured = experiments.create(
            "pictures", "Read {{id}}", read_dataset(f"id,image\n1,{url}\n2,{url}\n"), list(experiment.variants)
        )
        assert [[a.data for a in row] for row in experiments.images(pictured.id, 0, 1).values()] == [[PNG_1PX]] * 2
        assert len(opened.rows("attachments")) == 1 and len(opened.rows("experiment_row_attachments")) == 2
        # Prompts (0010): the old run started from no prompt; the tables are there, empty, and a
        # prompt saved now, labelled, is what a new run of the old experiment records.
        assert run.prompt_version_id is None
        assert all(row["prompt_version_id"] is None for row in opened.rows("experiment_runs"))
        assert opened.rows("prompts") == [] and opened.rows("prompt_label_moves") == []
        prompts = PromptStore(log)
        saved = prompts.save(
            "old-experiment", PromptContent(system=experiment.template, variant=experiment.variants[0]), by="local"
        )
        prompts.move_label("old-experiment", "production", saved.version, by="local")
        assert prompts.resolve("old-experiment").id == saved.id
        again = experiments.new_run(experiment, "contains", {}, prompt_version_id=saved.id)
        experiments.finish_run(again.id, "stopped")
        assert experiments.run(again.id).prompt_version_id == saved.id
        # The pairwise judges' votes (0009): none yet; an old run takes a judged pair and counts it.
        assert opened.rows("experiment_judge_votes") == []
        judged = JudgeVote(row=0, a=0, b=1, judge=JudgeTarget(provider="alpha"), outcome="a", first="1", second="2")
        experiments.write_judge_votes(run.id, [judged.model_copy(update={"calls": 2})])
        (pair,) = experiments.pairwise_stats(run.id)
        assert (pair.wins_a, pair.wins_b, pair.ties, pair.win_rate(0)) == (1, 0, 0, 1.0)
        # ...and it takes new rows.
        assert log.write(make_record(id="att_after_upgrade", request_id="req_after_upgrade", attempt_index=0))
        assert log.count() == counts["attempts"] + 1
    finally:
        log.close()


def test_processes_opening_an_old_database_at_once_upgrade_it_once(previous_release: tuple[Place, Place]) -> None:
    """Four processes open the previous release's database at the same moment: one upgrades
    it (under the lock), the others find it done; each then writes."""
    opened, _ = previous_release
    opened.data_dir.mkdir(parents=True, exist_ok=True)
    go = opened.data_dir / "go"
    child = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from conductor_core.models import AttemptRecord\n"
        "from conductor_core.store import RequestLog\n"
        "url, data_dir, go, n = sys.argv[1:]\n"
        "Path(data_dir, f'ready-{n}').touch()\n"
        "while not Path(go).exists():\n"
        "    time.sleep(0.005)\n"
        "log = RequestLog(None if url == '-' else url, data_dir=Path(data_dir))\n"
        "assert log.write(AttemptRecord(id=f'att_p{n}', request_id=f'req_p{n}', provider='alpha', status='ok'))\n"
        "log.close()\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", child, opened.url or "-", str(opened.data_dir), str(go), str(n)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    _wait_for(lambda: all((opened.data_dir / f"ready-{n}").exists() for n in range(4)), "the processes to start")
    go.touch()
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    assert sum(err.count("upgraded the schema") for _, err in outputs) == 1
    assert opened.revisions() == (migrate.HEAD,)
    attempts = opened.rows("attempts")
    assert len(attempts) == MANIFEST[opened.backend]["attempts"] + 4
    rollups = opened.rows("attempt_rollups")
    assert sum(row["requests"] for row in rollups) == len(attempts)
    assert sum(row["first_attempts"] for row in rollups) == len({row["request_id"] for row in attempts})


def _wait_for(condition: Any, what: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_downgrade_to_the_baseline_and_up_again_keeps_the_rows(previous_release: tuple[Place, Place]) -> None:
    opened, untouched = previous_release
    engine = opened.engine()
    try:
        migrate.upgrade(engine, "old")
        assert migrate.downgrade(engine, "old", migrate.BASELINE) == (migrate.HEAD,)
        assert opened.revisions() == (migrate.BASELINE,)
        assert _reflected(opened) == _reflected(untouched)  # the previous release's schema again
        assert len(opened.rows("attempts")) == MANIFEST[opened.backend]["attempts"]
        assert opened.rows("conductor_schema") == [{"key": "rollups_version", "value": "2"}]
        migrate.upgrade(engine, "old")
        assert migrate.differences(engine) == []
        attempts = opened.rows("attempts")
        assert {row["id"]: row["attempt_index"] for row in attempts} == _expected_attempt_index(attempts)
    finally:
        engine.dispose()


# --- fresh, older and newer databases ---------------------------------------------------------


def test_a_fresh_database_is_built_by_the_migrations_to_what_the_models_describe(place: Place) -> None:
    log = place.open_log()
    try:
        assert log.write(make_record())
        assert place.revisions() == (migrate.HEAD,)
        engine = place.engine()
        assert migrate.differences(engine) == []
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        queue = {t for t in tables if t.startswith(migrate.QUEUE_TABLE_PREFIX)}
        assert tables - queue == {t for m in migrate.model_metadata() for t in m.tables} | {"alembic_version"}
        # The job queue's tables (0012) on PostgreSQL only: SQLite runs experiments in-process.
        wanted = {
            "procrastinate_jobs",
            "procrastinate_workers",
            "procrastinate_events",
            "procrastinate_periodic_defers",
        }
        assert queue == (wanted if place.backend == "postgresql" else set())
        engine.dispose()
    finally:
        log.close()


def test_a_column_added_to_a_model_without_a_migration_is_found(place: Place, monkeypatch) -> None:
    """The comparison above can fail: a model with one more column than the migrations make."""
    place.open_log().open()
    monkeypatch.setattr(migrate, "model_metadata", lambda: _models_with(Column("dataset_id", schema.SafeString())))
    engine = place.engine()
    try:
        found = migrate.differences(engine)
    finally:
        engine.dispose()
    assert [(d[0], d[2], d[3].name) for d in found] == [("add_column", "experiments", "dataset_id")]


def _models_with(extra: Column[Any]) -> list[MetaData]:
    """The models, with `extra` added to the experiments table (a copy: the real one is untouched)."""
    changed = MetaData()
    for metadata in MODELS():
        for table in metadata.tables.values():
            table.to_metadata(changed)
    changed.tables["experiments"].append_column(extra)
    return [changed]


def test_a_database_at_an_older_revision_is_upgraded_and_its_requests_counted(place: Place) -> None:
    """A database two revisions behind (before attempt_index): its attempts get their
    positions, the rollups count requests apart from attempts."""
    place.data_dir.mkdir(parents=True, exist_ok=True)
    engine = place.engine()
    migrate.upgrade(engine, "older", target="0002")
    engine.dispose()
    values = []
    for n, (request, provider, status, seconds) in enumerate(
        [
            ("req_a", "alpha", "error", 0.0),  # a retry...
            ("req_a", "alpha", "ok", 1.0),
            ("req_b", "alpha", "error", 2.0),  # ...a fallback to another provider...
            ("req_b", "beta", "error", 3.0),
            ("req_b", "gamma", "ok", 4.0),
            ("req_c", "beta", "ok", 5.0),  # ...and a plain request
        ]
    ):
        at = T0 + timedelta(seconds=seconds)
        values.append(
            f"('att_{n}', '{at.isoformat()}', {at.timestamp()}, '{request}', '{provider}', 'manual', 'gateway', "
            f"{'true' if place.backend == 'postgresql' else 1}, '{status}', 1, 2)"
        )
    place.execute(
        "INSERT INTO attempts (id, created_at, created_ts, request_id, provider, route, source, streamed, status, "
        "input_tokens, output_tokens) VALUES " + ", ".join(values)
    )
    log = place.open_log()
    try:
        log.open()
        assert place.revisions() == (migrate.HEAD,)
        found = {row["id"]: row["attempt_index"] for row in place.rows("attempts")}
        assert found == {"att_0": 0, "att_1": 1, "att_2": 0, "att_3": 1, "att_4": 2, "att_5": 0}
        totals = log.usage_totals()
        assert (totals.total_requests, totals.total_attempts, totals.successful_requests) == (3, 6, 3)
        assert totals.failed_requests == 0  # every request got its answer in the end
        by_provider = {name: usage.total_requests for name, usage in log.provider_totals().items()}
        assert by_provider == {"alpha": 3, "beta": 2, "gamma": 1}  # calls each provider received
        aggregate = log.aggregate(bucket_s=60)
        assert (aggregate["requests"].sum(), aggregate["first_attempts"].sum()) == (6, 3)
    finally:
        log.close()


def test_a_database_at_0008_gets_saved_datasets_and_its_runs_read_as_from_no_dataset(place: Place) -> None:
    """The release before saved datasets: its experiment run upgrades in place, reads as a run of
    no saved dataset, and a run after the upgrade records the dataset version it used."""
    place.data_dir.mkdir(parents=True, exist_ok=True)
    engine = place.engine()
    migrate.upgrade(engine, "older", target="0008")
    engine.dispose()
    true = "true" if place.backend == "postgresql" else "1"
    variants = json.dumps([{"provider": "openai", "model": "a"}, {"provider": "openai", "model": "b"}])
    at = T0.isoformat()
    place.execute(
        "INSERT INTO experiments (id, created_at, created_ts, name, template, variants, columns, row_count, "
        f"has_expected) VALUES ('exp_old', '{at}', {T0.timestamp()}, 'old', 'Say {{{{x}}}}', '{variants}', "
        f"'[\"x\"]', 1, {true})",
        "INSERT INTO experiment_rows (experiment_id, row_index, line, row_values, expected) "
        "VALUES ('exp_old', 0, 2, '{\"x\": \"hi\"}', 'hi')",
        "INSERT INTO experiment_runs (id, experiment_id, number, created_at, created_ts, check_kind, concurrency, "
        f"status, heartbeat_ts, finished_at, cells_total, checks) VALUES ('run_old', 'exp_old', 1, '{at}', "
        f"{T0.timestamp()}, 'contains', '{{}}', 'completed', {T0.timestamp()}, '{at}', 2, NULL)",
    )
    log = place.open_log()
    try:
        log.open()
        assert place.revisions() == (migrate.HEAD,)
        experiments = ExperimentStore(log)
        (old_run,) = experiments.runs("exp_old")
        assert (old_run.number, old_run.dataset_name, old_run.dataset_version) == (1, None, None)
        datasets = DatasetStore(log)
        saved = datasets.import_dataset("greetings", read_dataset("x,expected\nhi,hi\n"), by="local")
        experiment = experiments.create(
            "new", "Say {{x}}", datasets.load("greetings"), list(experiments.experiment("exp_old").variants)
        )
        run = experiments.new_run(experiment, "contains", {}, (saved.name, saved.version))
        experiments.finish_run(run.id, "stopped")
        assert experiments.run(run.id).dataset_label == "dataset greetings v1"
        # Down to 0008 and up again: the tables go and come back, the old run stays.
        engine = place.engine()
        migrate.downgrade(engine, "older", "0008")
        with engine.connect() as conn:
            assert "datasets" not in set(inspect(conn).get_table_names())
        migrate.upgrade(engine, "older")
        assert migrate.differences(engine) == []
        engine.dispose()
        assert [r.id for r in experiments.runs("exp_old")] == ["run_old"]
    finally:
        log.close()


def test_a_database_at_0011_gets_experiment_jobs_and_its_running_run_stays_in_process(place: Place) -> None:
    """The release before experiment jobs (0012): its runs upgrade in place and read as run in
    their process, never stopped; on PostgreSQL the job queue's tables come, a run's cells can be
    queued in the transaction that creates it, and they go again on a downgrade."""
    from conductor_core.jobs import enqueue_run

    place.data_dir.mkdir(parents=True, exist_ok=True)
    engine = place.engine()
    migrate.upgrade(engine, "older", target="0011")
    engine.dispose()
    true = "true" if place.backend == "postgresql" else "1"
    variants = json.dumps([{"provider": "openai", "model": "a"}, {"provider": "anthropic", "model": "b"}])
    at = T0.isoformat()
    place.execute(
        "INSERT INTO experiments (id, created_at, created_ts, name, template, variants, columns, row_count, "
        f"has_expected) VALUES ('exp_old', '{at}', {T0.timestamp()}, 'old', 'Say {{{{x}}}}', '{variants}', "
        f"'[\"x\"]', 2, {true})",
        "INSERT INTO experiment_rows (experiment_id, row_index, line, row_values, expected) "
        "VALUES ('exp_old', 0, 2, '{\"x\": \"hi\"}', 'hi'), ('exp_old', 1, 3, '{\"x\": \"yo\"}', 'yo')",
        "INSERT INTO experiment_runs (id, experiment_id, number, created_at, created_ts, check_kind, concurrency, "
        f"status, heartbeat_ts, finished_at, cells_total, checks) VALUES ('run_old', 'exp_old', 1, '{at}', "
        f"{T0.timestamp()}, 'contains', '{{}}', 'running', {T0.timestamp()}, NULL, 4, NULL)",
    )
    log = place.open_log()
    try:
        log.open()
        assert place.revisions() == (migrate.HEAD,)
        experiments = ExperimentStore(log)
        old = experiments.run("run_old")
        # Ran in a process that is gone (no lease): interrupted, as before; not a queued run.
        assert (old.runner, old.stop_requested, old.status) == ("in_process", False, "interrupted")
        engine = place.engine()
        assert migrate.differences(engine) == []
        with engine.connect() as conn:
            queue_tables = {t for t in inspect(conn).get_table_names() if t.startswith("procrastinate_")}
        assert ("procrastinate_jobs" in queue_tables) == (place.backend == "postgresql")
        if place.backend == "postgresql":
            experiment = experiments.experiment("exp_old")
            limits = {"openai": 1, "anthropic": 2}
            run = experiments.new_run(
                experiment, "contains", limits, enqueue=lambda conn, run: enqueue_run(conn, run, experiment, limits)
            )
            assert (experiments.run(run.id).runner, experiments.run(run.id).status) == ("jobs", "running")
            with engine.connect() as conn:
                jobs = conn.execute(
                    text("SELECT lock, args FROM procrastinate_jobs WHERE args->>'run_id' = :run ORDER BY id"),
                    {"run": run.id},
                ).all()
            # The head of each lane: one lane for openai (its cells one at a time), two for anthropic.
            assert [(lock.rsplit(":", 2)[1:], args["row"], args["variant"]) for lock, args in jobs] == [
                (["openai", "0"], 0, 0),
                (["anthropic", "0"], 0, 1),
                (["anthropic", "1"], 1, 1),
            ]
        # Down to 0011 and up again: the queue and the columns go and come back; the run stays.
        migrate.downgrade(engine, "older", "0011")
        with engine.connect() as conn:
            assert not {t for t in inspect(conn).get_table_names() if t.startswith("procrastinate_")}
            assert "runner" not in {c["name"] for c in inspect(conn).get_columns("experiment_runs")}
        migrate.upgrade(engine, "older")
        assert migrate.differences(engine) == []
        engine.dispose()
        assert "run_old" in [r.id for r in experiments.runs("exp_old")]
    finally:
        log.close()


def test_a_database_at_0012_gets_gateway_keys_and_its_attempts_read_as_made_with_no_key(place: Place) -> None:
    """The release before gateway keys (0013): its attempts upgrade in place with no key; a key
    made afterwards is stored as a hash, and its attempts are counted in its spend."""
    from conductor_core.keys import KeyStore, hash_key

    place.data_dir.mkdir(parents=True, exist_ok=True)
    engine = place.engine()
    migrate.upgrade(engine, "older", target="0012")
    engine.dispose()
    at = T0.isoformat()
    true = "true" if place.backend == "postgresql" else "1"
    place.execute(
        "INSERT INTO attempts (id, created_at, created_ts, request_id, provider, route, source, streamed, status, "
        f"input_tokens, output_tokens, cost_usd) VALUES ('att_old', '{at}', {T0.timestamp()}, 'req_old', 'openai', "
        f"'manual', 'gateway', {true}, 'ok', 3, 4, 0.5)"
    )
    log = place.open_log()
    try:
        log.open()
        assert place.revisions() == (migrate.HEAD,)
        (old,) = place.rows("attempts")
        assert old["key_id"] is None and old["cost_usd"] == 0.5
        keys = KeyStore(log)
        made, secret = keys.create("app", owner="ana", rpm=5, budget_usd=1.0, budget_period="month")
        (stored,) = place.rows("gateway_keys")
        assert stored["secret_hash"] == hash_key(secret) and secret not in json.dumps(stored, default=str)
        assert log.write(make_record(key_id=made.id, cost_usd=0.25, created_at=T0 + timedelta(seconds=1)))
        assert keys.spent_since(made.id, T0) == 0.25  # the old attempt is no key's
        # Down to 0012 and up again: the table and the column go and come back; the old row stays.
        engine = place.engine()
        migrate.downgrade(engine, "older", "0012")
        with engine.connect() as conn:
            assert "gateway_keys" not in set(inspect(conn).get_table_names())
            assert "key_id" not in {c["name"] for c in inspect(conn).get_columns("attempts")}
        migrate.upgrade(engine, "older")
        assert migrate.differences(engine) == []
        engine.dispose()
        assert "att_old" in {row["id"] for row in place.rows("attempts")}
    finally:
        log.close()


def test_a_database_at_0013_gets_people_and_its_sessions_are_the_local_users_shared_in_default(place: Place) -> None:
    """The release before people (0014): its sessions upgrade in place as the local user's, in
    the Default workspace and shared there (everyone who could open them still can); the local
    user owns Default; a session made afterwards is private to its author."""
    from conductor_core.team import DEFAULT_WORKSPACE_ID, LOCAL, LOCAL_USER_ID, Person, TeamStore

    place.data_dir.mkdir(parents=True, exist_ok=True)
    engine = place.engine()
    migrate.upgrade(engine, "older", target="0013")
    engine.dispose()
    at = T0.isoformat()
    variant = json.dumps({"provider": "openai", "model": "a"})
    place.execute(
        "INSERT INTO wb_sessions (id, kind, title, created_at, updated_at, updated_ts, settings_rev) "
        f"VALUES ('ses_old', 'chat', 'before people', '{at}', '{at}', {T0.timestamp()}, 0)",
        f"INSERT INTO wb_lanes (session_id, lane, variant) VALUES ('ses_old', 0, '{variant}')",
    )
    log = place.open_log()
    try:
        log.open()
        assert place.revisions() == (migrate.HEAD,)
        (old,) = place.rows("wb_sessions")
        assert (old["workspace_id"], old["created_by"], old["visibility"]) == (
            DEFAULT_WORKSPACE_ID,
            LOCAL_USER_ID,
            "workspace",
        )
        sessions = SessionStore.for_log(log)
        assert [s.id for s in sessions.recent("chat", person=LOCAL)] == ["ses_old"]
        colleague = Person("usr_bo", "bo@example.com", DEFAULT_WORKSPACE_ID, "member")
        assert [s.id for s in sessions.recent("chat", person=colleague)] == ["ses_old"]
        (membership,) = TeamStore(log).memberships(LOCAL_USER_ID)
        assert (membership.workspace.name, membership.role) == ("Default", "owner")
        made = sessions.create("chat", [Variant(provider="openai", model="a")], by=LOCAL)
        assert [s.id for s in sessions.recent("chat", person=colleague)] == ["ses_old"]
        assert sessions.get(made.id).visibility == "private"
        # Down to 0013 and up again: the tables and the columns go and come back; the session stays.
        engine = place.engine()
        migrate.downgrade(engine, "older", "0013")
        with engine.connect() as conn:
            assert not {"users", "workspaces", "memberships"} & set(inspect(conn).get_table_names())
            assert "created_by" not in {c["name"] for c in inspect(conn).get_columns("wb_sessions")}
        migrate.upgrade(engine, "older")
        assert migrate.differences(engine) == []
        engine.dispose()
        assert {row["id"]: row["created_by"] for row in place.rows("wb_sessions")} == {
            "ses_old": LOCAL_USER_ID,
            made.id: LOCAL_USER_ID,
        }
    finally:
        log.close()


def test_a_database_newer_than_the_code_is_a_clear_error_and_no_row_is_retried_for_ever(
    place: Place, monkeypatch
) -> None:
    first = place.open_log()
    assert first.write(make_record(id="att_before"))
    first.close()
    place.execute("UPDATE alembic_version SET version_num = '0099'")  # what a newer release leaves

    log = place.open_log()
    try:
        with pytest.raises(DatabaseNewerError) as raised:
            log.open()
        message = str(raised.value)
        assert "0099" in message and "newer release" in message and migrate.HEAD in message
        assert "conductor:conductor" not in message  # no password in it
        # Writes: set aside at once, with the reason, never retried as an outage.
        log.submit(make_record(id="att_refused", request_id="req_refused"))
        assert log.flush(timeout=60) is True
        health = log.health()
        assert (health.pending, health.rejected, health.write_errors) == (0, 1, 1)
        assert health.schema_error and "0099" in health.schema_error
        rejected = (Path(health.spool_dir or "") / REJECTED_FILE).read_text()
        assert "att_refused" in rejected
        # Reads say the same; the workbench too.
        with pytest.raises(DatabaseNewerError):
            log.records()
        with pytest.raises(SchemaError):
            SessionStore.for_log(log).recent()
        # Nothing was changed.
        assert place.revisions() == ("0099",)
        assert [row["id"] for row in place.rows("attempts")] == ["att_before"]
    finally:
        log.close()


def test_status_says_the_database_is_newer_than_the_code(place: Place) -> None:
    first = place.open_log()
    first.open()
    first.close()
    place.execute("UPDATE alembic_version SET version_num = '0099'")
    settings = load_settings(
        _env_file=None, local_enabled=False, database_url=place.url, data_dir=place.data_dir, api_key=GATEWAY_KEY
    )
    conductor = Conductor(settings)  # starts (it can still answer), and says why nothing is logged
    try:
        assert conductor.log.schema_error and "0099" in conductor.log.schema_error
        status = conductor.status()
        assert status.request_log is not None and "newer release" in (status.request_log.schema_error or "")
        with TestClient(create_app(conductor)) as client:  # the gateway's GET /status
            answer = client.get("/status", headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
            shown = answer.json()["request_log"]["schema_error"]
        assert "0099" in shown and "newer release" in shown
    finally:
        conductor.close()


def test_an_unversioned_log_from_before_rollups_and_the_workbench_is_adopted(place: Place) -> None:
    """A log made by a release older than the previous one (a gateway's: no workbench tables;
    from before the rollups): the missing tables are created and the rollups built."""
    _baseline_with_attempts(place)
    place.execute(
        "DROP TABLE alembic_version",
        "DROP TABLE attempt_rollups",
        "DROP TABLE conductor_schema",
        *(f"DROP TABLE {name}" for name in ("wb_answers", "wb_turns", "wb_lanes", "wb_sessions")),
        *(f"DROP TABLE {name}" for name in ("arena_answers", "arena_matches")),
        *(f"DROP TABLE {name}" for name in ("experiment_cells", "experiment_runs", "experiment_rows", "experiments")),
    )
    log = place.open_log()
    try:
        log.open()
        assert place.revisions() == (migrate.HEAD,)
        engine = place.engine()
        assert migrate.differences(engine) == []
        engine.dispose()
        rollups = place.rows("attempt_rollups")
        assert (sum(r["requests"] for r in rollups), sum(r["first_attempts"] for r in rollups)) == (3, 2)
        assert SessionStore.for_log(log).recent() == []  # its tables exist now
    finally:
        log.close()


def test_rollups_built_by_an_older_rule_are_rebuilt_when_an_unversioned_log_is_adopted(place: Place) -> None:
    """Rollups of rule 1 (no not_at_fault column, stale sums) in a log from before migrations:
    the column is added and every minute recomputed from the rows."""
    _baseline_with_attempts(place)
    place.execute(
        "DROP TABLE alembic_version",
        "ALTER TABLE attempt_rollups DROP COLUMN not_at_fault",
        "INSERT INTO attempt_rollups VALUES ('gemini', 0, 99, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
        "UPDATE conductor_schema SET value = '1'",
    )
    log = place.open_log()
    try:
        log.open()
        rollups = place.rows("attempt_rollups")
        assert {r["provider"] for r in rollups} == {"alpha"}  # the stale row is gone
        assert (sum(r["requests"] for r in rollups), sum(r["not_at_fault"] for r in rollups)) == (3, 1)
        engine = place.engine()
        assert migrate.differences(engine) == []
        engine.dispose()
    finally:
        log.close()


def test_an_unversioned_database_no_release_made_is_refused_and_left_alone(place: Place) -> None:
    _baseline_with_attempts(place)
    place.execute("DROP TABLE alembic_version", "ALTER TABLE attempts DROP COLUMN request_id")
    log = place.open_log()
    try:
        with pytest.raises(SchemaMismatchError) as raised:
            log.open()
        assert "table attempts lacks request_id" in str(raised.value)
        assert place.revisions() == ()  # nothing changed: not even stamped
    finally:
        log.close()


def _baseline_with_attempts(place: Place) -> None:
    """The previous release's schema (revision 0001) with a retried request and a bad one,
    and their rollups as that release summed them (rule 2)."""
    place.data_dir.mkdir(parents=True, exist_ok=True)
    engine = place.engine()
    migrate.upgrade(engine, "baseline", target=migrate.BASELINE)
    with engine.begin() as conn:
        flag = "true" if place.backend == "postgresql" else "1"
        for n, (request, status, error) in enumerate(
            [("req_x", "error", "'timeout'"), ("req_x", "ok", "NULL"), ("req_y", "error", "'bad_request'")]
        ):
            at = T0 + timedelta(seconds=n)
            conn.execute(
                text(
                    "INSERT INTO attempts (id, created_at, created_ts, request_id, provider, route, source, streamed, "
                    f"status, error_type, input_tokens, output_tokens) VALUES ('att_{n}', '{at.isoformat()}', "
                    f"{at.timestamp()}, '{request}', 'alpha', 'manual', 'gateway', {flag}, '{status}', {error}, 1, 2)"
                )
            )
        rollup_rules.rebuild(conn, rule=2)
        conn.execute(text("INSERT INTO conductor_schema VALUES ('rollups_version', '2')"))
    engine.dispose()


# --- by hand ----------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conductor_core.store", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_upgrades_reports_and_checks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(FIXTURES / "conductor.db", data / "conductor.db")
    found = _cli("--data-dir", str(data), "current")
    assert found.returncode == 0 and "not versioned" in found.stdout
    done = _cli("--data-dir", str(data), "upgrade")
    assert done.returncode == 0, done.stderr
    assert f"upgraded from {migrate.BASELINE} (adopted) to {migrate.HEAD}" in done.stdout
    assert "up to date" in _cli("--data-dir", str(data), "current").stdout
    assert "already at" in _cli("--data-dir", str(data), "upgrade").stdout
    checked = _cli("--data-dir", str(data), "check")
    assert checked.returncode == 0 and "matches the models" in checked.stdout
    back = _cli("--data-dir", str(data), "downgrade", migrate.BASELINE)
    assert back.returncode == 0, back.stderr
    differs = _cli("--data-dir", str(data), "check")
    assert differs.returncode == 1 and "conductor_schema" in differs.stdout  # a table the code no longer has
    Place("sqlite", None, data).execute("UPDATE alembic_version SET version_num = '0099'")
    for command in ("current", "upgrade"):
        refused = _cli("--data-dir", str(data), command)
        assert refused.returncode == 1 and "newer release" in refused.stderr, refused


def test_a_new_revision_is_autogenerated_from_a_model_change_and_applies(tmp_path: Path, monkeypatch) -> None:
    """What the README tells the next developer: change a table, autogenerate, review, test."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.SCRIPT_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "SCRIPT_DIR", scripts)
    monkeypatch.setattr(migrate, "model_metadata", lambda: _models_with(Column("dataset_id", schema.SafeString())))
    path = migrate.new_revision("experiments get a dataset id", autogenerate=True)
    assert (
        path.parent == scripts / "versions"
        and path.name == f"{int(migrate.HEAD) + 1:04d}_experiments_get_a_dataset_id.py"
    )
    source = path.read_text()
    assert "dataset_id" in source and "sa.String()" in source
    assert "conductor_core.store.schema" not in source  # plain types: a migration never imports the models
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        migrate.upgrade(engine, "scratch")
        with engine.connect() as conn:
            assert migrate.current_revisions(conn) == (path.name[:4],)
        assert migrate.differences(engine) == []
    finally:
        engine.dispose()


def test_a_record_survives_a_round_trip_with_its_position_and_overhead(place: Place) -> None:
    log = place.open_log()
    try:
        record = AttemptRecord(request_id="r", provider="alpha", status="ok", attempt_index=2, overhead_ms=1.25)
        assert log.write(record)
        (found,) = log.records()
        assert (found.attempt_index, found.overhead_ms) == (2, 1.25)
        exported = json.loads(log.export("json"))
        assert (exported[0]["attempt_index"], exported[0]["overhead_ms"]) == (2, 1.25)
        header = log.export("csv").decode().splitlines()[0].split(",")
        assert {"attempt_index", "overhead_ms"} <= set(header)
    finally:
        log.close()
