"""The schema as the last release before migrations left it (a40b370): every table of the
request log and of the workbench, with its types, indexes and server defaults.

Frozen. Revision 0001 creates exactly this, and a database made before migrations (it has no
``alembic_version``) is compared with it before it is stamped at 0001 (see migrate.py). Never
edit it: a change to the schema is a new revision. Plain types here, not the models'
TypeDecorators (SafeText, UTCDateTime): their DDL is that of their `impl`.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["baseline_tables"]


def baseline_tables() -> MetaData:
    """A fresh MetaData holding the baseline's tables."""
    m = MetaData()
    when = DateTime(timezone=True)

    # --- the request log (store/schema.py) ---
    Table(
        "attempts",
        m,
        Column("id", String(), primary_key=True),
        Column("created_at", when, nullable=False),
        Column("created_ts", Double(), nullable=False),
        Column("request_id", String(), nullable=False),
        Column("provider", String(), nullable=False),
        Column("model", String()),
        Column("route", String(), nullable=False),
        Column("group_id", String()),
        Column("source", String(), nullable=False),
        Column("streamed", Boolean(), nullable=False),
        Column("status", String(), nullable=False),
        Column("error_type", String()),
        Column("error_message", Text()),
        Column("input_tokens", Integer(), nullable=False),
        Column("output_tokens", Integer(), nullable=False),
        Column("latency_ms", Double()),
        Column("ttft_ms", Double()),
        Column("cost_usd", Double()),
        Column("prompt", Text()),
        Column("answer", Text()),
        Index("ix_attempts_created_ts", "created_ts"),
        Index("ix_attempts_provider_created_ts", "provider", "created_ts"),
    )
    Table(
        "votes",
        m,
        Column("id", String(), primary_key=True),
        Column("created_at", when, nullable=False),
        Column("created_ts", Double(), nullable=False),
        Column("group_id", String(), nullable=False),
        Column("targets", Text(), nullable=False),
        Column("winner", String(), nullable=False),
        Index("ix_votes_created_ts", "created_ts"),
        Index("ix_votes_group_id", "group_id"),
    )
    Table(
        "attempt_rollups",
        m,
        Column("provider", String(), primary_key=True),
        Column("bucket_ts", Double(), primary_key=True),
        Column("requests", Integer(), nullable=False),
        Column("ok", Integer(), nullable=False),
        Column("errors", Integer(), nullable=False),
        Column("incomplete", Integer(), nullable=False),
        Column("not_at_fault", Integer(), nullable=False, server_default="0"),
        Column("priced", Integer(), nullable=False),
        Column("latency_sum_ms", Double(), nullable=False),
        Column("latency_n", Integer(), nullable=False),
        Column("ttft_sum_ms", Double(), nullable=False),
        Column("ttft_n", Integer(), nullable=False),
        Column("generation_tokens", Integer(), nullable=False),
        Column("generation_s", Double(), nullable=False),
        Column("cost_usd", Double(), nullable=False),
        Column("input_tokens", Integer(), nullable=False),
        Column("output_tokens", Integer(), nullable=False),
    )
    Table(
        "conductor_schema",
        m,
        Column("key", String(), primary_key=True),
        Column("value", String(), nullable=False),
    )

    # --- sessions (workbench/sessions.py) ---
    Table(
        "wb_sessions",
        m,
        Column("id", String(), primary_key=True),
        Column("kind", String(), nullable=False),
        Column("title", Text(), nullable=False),
        Column("created_at", when, nullable=False),
        Column("updated_at", when, nullable=False),
        Column("updated_ts", Double(), nullable=False),
        Column("settings_rev", Integer(), nullable=False),
        Index("ix_wb_sessions_kind_updated", "kind", "updated_ts"),
    )
    Table(
        "wb_lanes",
        m,
        Column("session_id", String(), ForeignKey("wb_sessions.id"), primary_key=True),
        Column("lane", Integer(), primary_key=True),
        Column("variant", Text(), nullable=False),
    )
    Table(
        "wb_turns",
        m,
        Column("id", String(), primary_key=True),
        Column("session_id", String(), ForeignKey("wb_sessions.id"), nullable=False),
        Column("parent_id", String()),
        Column("after_answer_id", String()),
        Column("prompt", Text(), nullable=False),
        Column("created_at", when, nullable=False),
        Column("created_ts", Double(), nullable=False),
        Column("selected_ts", Double(), nullable=False),
        Column("vote", String()),
        Column("vote_id", String()),
        Index("ix_wb_turns_session", "session_id", "created_ts"),
    )
    Table(
        "wb_answers",
        m,
        Column("id", String(), primary_key=True),
        Column("session_id", String(), ForeignKey("wb_sessions.id"), nullable=False),
        Column("turn_id", String(), ForeignKey("wb_turns.id"), nullable=False),
        Column("lane", Integer(), nullable=False),
        Column("variant", Text(), nullable=False),
        Column("status", String(), nullable=False),
        Column("content", Text(), nullable=False),
        Column("notice", Text()),
        Column("error_type", String()),
        Column("error_message", Text()),
        Column("request_id", String()),
        Column("response", Text()),
        Column("attempts", Text()),
        Column("use_as_context", Boolean()),
        Column("created_at", when, nullable=False),
        Column("created_ts", Double(), nullable=False),
        Column("updated_ts", Double(), nullable=False),
        Column("finished_ts", Double()),
        Column("selected_ts", Double(), nullable=False),
        Column("elapsed_ms", Double()),
        Column("first_text_ms", Double()),
        Index("ix_wb_answers_session", "session_id", "created_ts"),
        Index("ix_wb_answers_turn", "turn_id"),
        Index("ix_wb_answers_request", "request_id"),
    )

    # --- the arena (workbench/arena.py) ---
    Table(
        "arena_matches",
        m,
        Column("id", String(), primary_key=True),
        Column("created_at", when, nullable=False),
        Column("created_ts", Double(), nullable=False),
        Column("prompt", Text(), nullable=False),
        Column("status", String(), nullable=False),
        Column("choice", String()),
        Column("voted_at", when),
        Column("voted_ts", Double()),
        Column("judged", Text()),
        Index("ix_arena_matches_voted_ts", "voted_ts"),
    )
    Table(
        "arena_answers",
        m,
        Column("match_id", String(), primary_key=True),
        Column("slot", Integer(), primary_key=True),
        Column("variant", Text(), nullable=False),
        Column("label", Text(), nullable=False),
        Column("target", String(), nullable=False),
        Column("status", String(), nullable=False),
        Column("request_id", String()),
        Column("answer", Text()),
        Column("latency_ms", Double()),
        Column("ttft_ms", Double()),
        Column("cost_usd", Double()),
        Column("error_type", String()),
    )

    # --- experiments (workbench/experiments.py) ---
    Table(
        "experiments",
        m,
        Column("id", String(), primary_key=True),
        Column("created_at", when, nullable=False),
        Column("created_ts", Double(), nullable=False),
        Column("name", Text(), nullable=False),
        Column("template", Text(), nullable=False),
        Column("variants", Text(), nullable=False),
        Column("columns", Text(), nullable=False),
        Column("row_count", Integer(), nullable=False),
        Column("has_expected", Boolean(), nullable=False),
        Index("ix_experiments_created_ts", "created_ts"),
    )
    Table(
        "experiment_rows",
        m,
        Column("experiment_id", String(), primary_key=True),
        Column("row_index", Integer(), primary_key=True),
        Column("line", Integer()),
        Column("row_values", Text(), nullable=False),
        Column("expected", Text()),
    )
    Table(
        "experiment_runs",
        m,
        Column("id", String(), primary_key=True),
        Column("experiment_id", String(), nullable=False),
        Column("number", Integer(), nullable=False),
        Column("created_at", when, nullable=False),
        Column("created_ts", Double(), nullable=False),
        Column("check_kind", String(), nullable=False),
        Column("concurrency", Text(), nullable=False),
        Column("status", String(), nullable=False),
        Column("heartbeat_ts", Double(), nullable=False),
        Column("finished_at", when),
        Column("cells_total", Integer(), nullable=False),
        UniqueConstraint("experiment_id", "number", name="uq_experiment_runs_number"),
    )
    Table(
        "experiment_cells",
        m,
        Column("run_id", String(), primary_key=True),
        Column("row_index", Integer(), primary_key=True),
        Column("variant_index", Integer(), primary_key=True),
        Column("status", String(), nullable=False),
        Column("request_id", String()),
        Column("answer", Text()),
        Column("error_type", String()),
        Column("error_message", Text()),
        Column("latency_ms", Double()),
        Column("ttft_ms", Double()),
        Column("input_tokens", Integer(), nullable=False),
        Column("output_tokens", Integer(), nullable=False),
        Column("cost_usd", Double()),
        Column("passed", Boolean()),
        Column("rating", Integer()),
        Column("finished_ts", Double(), nullable=False),
        Index("ix_experiment_cells_request_id", "request_id"),
    )
    return m
