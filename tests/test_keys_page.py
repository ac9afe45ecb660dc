"""Gateway keys in the playground (issue 23, points 3-4): the request log read per key (SQLite
and PostgreSQL), a key's spend with unknown prices, the exports' key names, the pure helpers
the Keys page and the Dashboard share, and both pages through Streamlit's AppTest.

The browser flow (a key made on the page, used by the official openai client through a real
gateway, then revoked) is tests/test_browser_keys.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import tests.playground_fakes as fakes
from conductor_core.keys import GatewayKey, KeySpend, KeyStore
from conductor_core.models import AttemptRecord, utcnow
from conductor_core.store import NO_KEY
from playground import components as ui
from playground import keys_data as kd
from tests.store_backends import T0, Backend, make_record

APP = Path(__file__).resolve().parent.parent / "playground" / "app.py"

pytestmark = pytest.mark.timeout(120)


def key(**overrides) -> GatewayKey:
    values = {
        "id": "key_a",
        "name": "billing app",
        "prefix": "sk-cnd-AbCd",
        "created_at": datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
        "created_by": "local",
    }
    return GatewayKey(**{**values, **overrides})


# --- pure helpers -------------------------------------------------------------------------------


def test_spend_never_calls_an_unknown_price_free():
    assert kd.spend_text(KeySpend(0, 0, 0.0, 0), ui.format_cost) == "nothing yet"
    assert kd.spend_text(KeySpend(2, 2, 0.0, 2), ui.format_cost) == "unknown"  # not "free", not "$0"
    assert kd.spend_text(KeySpend(3, 3, 0.0123, 1), ui.format_cost) == "$0.0123 + 1 unpriced"
    assert kd.spend_text(KeySpend(2, 2, 0.0, 0), ui.format_cost) == "free"  # known to cost nothing
    assert kd.spend_text(KeySpend(2, 2, 0.5, 0), ui.format_cost) == "$0.5000"
    assert kd.spend_text(KeySpend(1, 0, 0.0, 0), ui.format_cost) == "free"  # a failure only: nothing charged


def test_spend_line_says_budget_period_reset_and_unknowns():
    now = datetime(2026, 3, 14, 15, 0, tzinfo=UTC)
    monthly = key(budget_usd=5.0, budget_period="month")
    line = kd.spend_line(monthly, KeySpend(4, 4, 1.25, 0), ui.format_cost, now)
    assert line == (
        "billing app has spent $1.2500 of its $5.00 monthly budget since Mar 01 (25.0%); it resets Apr 01 00:00 UTC."
    )
    daily = key(budget_usd=2.0, budget_period="day")
    line = kd.spend_line(daily, KeySpend(3, 3, 0.5, 2), ui.format_cost, now)
    assert "of its $2.00 daily budget today (since 00:00 UTC) (25.0%); it resets Mar 15 00:00 UTC" in line
    assert "$0.5000 + 2 unpriced" in line and "2 answers without a known price are not counted" in line
    line = kd.spend_line(daily, KeySpend(2, 2, 0.0, 2), ui.format_cost, now)
    assert "has spent unknown" in line and "the price of every answer is unknown" in line
    free = kd.spend_line(key(), KeySpend(1, 1, 0.01, 0), ui.format_cost, now)
    assert free == "billing app has spent $0.0100 since Mar 01; it has no budget."


def test_key_table_shows_the_prefix_limits_spend_and_state():
    made = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    keys = [
        key(id="key_a", budget_usd=10.0, budget_period="day", rpm=60, models=["openai", "local/gemma"]),
        key(
            id="key_b",
            name="old",
            prefix="sk-cnd-WxYz",
            created_at=made + timedelta(days=1),
            revoked_at=made + timedelta(days=2),
        ),
    ]
    table = kd.key_table(keys, {"key_a": KeySpend(5, 4, 2.5, 1)}, ui.format_cost)
    assert list(table.columns) == kd.KEY_TABLE_COLUMNS
    newest, older = table.to_dict("records")
    assert newest["Name"] == "old" and newest["Status"] == "revoked 2026-03-04 09:30"
    assert newest["Spent this period"] == "nothing yet this month" and newest["Budget"] == "none"
    assert newest["Used"] != newest["Used"] and newest["Models"] == "any"  # NaN: no budget
    assert older["Key"] == "sk-cnd-AbCd…" and older["Models"] == "openai, local/gemma" and older["RPM"] == 60
    assert older["Budget"] == "$10.00 / day" and older["Spent this period"] == "$2.5000 + 1 unpriced this day"
    assert older["Used"] == 0.25 and older["Status"] == "active"
    assert older["TPM"] is None or older["TPM"] != older["TPM"]


def test_model_choices_are_what_the_gateway_reads():
    assert kd.model_choices({"openai": ["gpt-a", "gpt-b"], "local": ["gemma"]}) == [
        "auto",
        "openai",
        "openai/gpt-a",
        "openai/gpt-b",
        "local",
        "local/gemma",
    ]
    assert kd.key_label(key(revoked_at=T0)) == "billing app · sk-cnd-AbCd… (revoked)"


# --- the request log per key (SQLite and PostgreSQL) --------------------------------------------------


def _mix(first: str, second: str, at: datetime = T0 + timedelta(minutes=5)) -> list[AttemptRecord]:
    """A known mix: 3 attempts of `first` (one a retry), 2 answers of `second` (one unpriced), 4 without a key."""
    return [
        make_record(request_id="r1", key_id=first, created_at=at, cost_usd=0.002),
        make_record(request_id="r2", key_id=first, created_at=at, status="error", cost_usd=None, attempt_index=0),
        make_record(request_id="r2", key_id=first, created_at=at, cost_usd=0.003, attempt_index=1),
        make_record(request_id="r3", key_id=second, created_at=at, cost_usd=None),
        make_record(request_id="r4", key_id=second, created_at=at, cost_usd=0.001),
        *(make_record(request_id=f"n{i}", created_at=at + timedelta(seconds=i)) for i in range(4)),
    ]


def test_reads_filter_by_key(backend: Backend):
    log = backend.make()
    store = KeyStore(log)
    first, _ = store.create("first")
    second, secret = store.create("second")
    assert log.write_many(_mix(first.id, second.id)) == 9
    since = T0

    assert log.count(since=since) == 9
    assert log.count(since=since, key_id=first.id) == 3
    assert log.count(since=since, key_id=second.id, status="ok") == 2
    assert log.count(since=since, key_id=NO_KEY) == 4
    assert {r.request_id for r in log.records(key_id=second.id)} == {"r3", "r4"}
    assert len(log.frame(since=since, key_id=NO_KEY)) == 4
    sums = log.aggregate(since=since, bucket_s=60, key_id=first.id)
    assert int(sums["requests"].sum()) == 3 and int(sums["first_attempts"].sum()) == 2
    assert sums["cost_usd"].sum() == pytest.approx(0.005)
    assert int(log.aggregate(since=since, bucket_s=60)["requests"].sum()) == 9  # the rollups: everyone's

    assert store.spend(first.id, since) == KeySpend(3, 2, pytest.approx(0.005), 0)
    assert store.spend(second.id, since) == KeySpend(2, 2, pytest.approx(0.001), 1)
    assert store.spend(second.id, T0 + timedelta(hours=1)) == KeySpend(0, 0, 0.0, 0)

    names = {k.id: k.name for k in store.list()}
    rows = json.loads(log.export("json", key_id=second.id, key_names=names))
    assert [(r["key_id"], r["key_name"]) for r in rows] == [(second.id, "second")] * 2
    table = list(csv.reader(io.StringIO(log.export("csv", key_names=names).decode())))
    header = table[0]
    assert header[header.index("key_id") + 1] == "key_name"
    by_request = {row[header.index("request_id")]: row[header.index("key_name")] for row in table[1:]}
    assert by_request["r1"] == "first" and by_request["r4"] == "second" and by_request["n0"] == ""
    exported = log.export("json", key_names=names) + log.export("csv", key_names=names)
    assert secret.encode() not in exported and secret[len(first.prefix) :].encode() not in exported
    assert "key_name" not in json.loads(log.export("json"))[0]  # only when asked, with the names


# --- the pages (AppTest) --------------------------------------------------------------------------------


def open_keys() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("views/keys.py").run()
    assert not at.exception, at.exception
    return at


def every_text(at: AppTest) -> str:
    """What the page shows: its elements' values and its tables' cells."""
    parts = []
    for node in at.main:
        for attribute in ("value", "label", "body"):
            value = getattr(node, attribute, None)
            if isinstance(value, str):
                parts.append(value)
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(parts)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_keys_page_makes_a_key_shown_once_and_revokes_it_once(env):
    at = open_keys()
    assert "No gateway keys yet" in at.info[0].value
    assert "CONDUCTOR_API_KEY" in at.caption[0].value  # the setting that turns the gateway's checks on
    button(at, "Create key").click().run()
    assert "Name the key" in at.error[0].value and not at.code  # nothing made

    at.text_input(key="key_name").set_value("  billing app ")
    at.multiselect(key="key_models").set_value(["alpha/alpha-small", "gamma"])
    at.number_input(key="key_rpm").set_value(30)
    at.number_input(key="key_budget").set_value(5.0)
    at.selectbox(key="key_period").set_value("day")
    button(at, "Create key").click().run()
    assert not at.exception, at.exception
    secret = at.code[0].value
    assert secret.startswith("sk-cnd-") and "stored only as a hash" in at.warning[0].value
    made = KeyStore(fakes.CONDUCTORS[-1].log).list()
    assert [(k.name, k.models, k.rpm, k.budget_usd, k.budget_period, k.owner) for k in made] == [
        ("billing app", ["alpha/alpha-small", "gamma"], 30, 5.0, "day", "local")
    ]
    row = at.dataframe[0].value.iloc[0]
    assert row["Key"] == f"{secret[:11]}…" and row["Spent this period"] == "nothing yet this day"
    assert at.text_input(key="key_name").value == ""  # the form is ready for the next key

    at.run()  # any next interaction: the key is gone from the page
    shown = every_text(at)
    assert not at.code and secret[11:] not in shown and f"{secret[:11]}…" in shown and "billing app" in shown

    other = open_keys()  # another tab, to revoke it first
    at.selectbox(key="key_to_revoke").set_value(made[0].id)
    button(at, "Revoke…").click().run()
    assert "Revoke **billing app**" in at.warning[0].value
    button(other, "Revoke…").click().run()
    button(other, "Yes, revoke it").click().run()
    assert "is revoked" in other.success[0].value.replace("\\", "")
    button(at, "Yes, revoke it").click().run()  # confirmed in the first tab afterwards
    assert "was already revoked" in at.info[0].value.replace("\\", "")
    assert at.dataframe[0].value.iloc[0]["Status"].startswith("revoked ")
    assert not [b for b in at.button if b.label == "Revoke…"]  # nothing left to revoke
    assert secret[11:] not in every_text(at)


def test_dashboard_key_filter_matches_a_known_mix(env):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    c = fakes.CONDUCTORS[-1]
    store = KeyStore(c.log)
    first, _ = store.create("first", budget_usd=1.0, budget_period="month")
    second, _ = store.create("second")
    assert c.log.write_many(_mix(first.id, second.id, utcnow() - timedelta(minutes=2))) == 9

    at.switch_page("views/dashboard.py").run()
    assert not at.exception, at.exception

    def requests_tile() -> tuple[str, str | None]:
        tile = next(m for m in at.metric if m.label == "Requests")
        return tile.value, tile.delta or None

    assert requests_tile() == ("8", "9 attempts")  # all: r2 was tried twice
    choices = at.selectbox(key="dash_key")
    assert choices.options == [
        "All traffic",
        f"first · {first.prefix}…",
        f"second · {second.prefix}…",
        "No key (playground, admin key)",
    ]
    choices.set_value(first.id).run()
    assert requests_tile() == ("2", "3 attempts")
    said = " ".join(m.value for m in at.markdown).replace("\\", "")
    assert "first has spent $0.005000 of its $1.00 monthly budget" in said
    at.selectbox(key="dash_key").set_value(second.id).run()
    assert requests_tile() == ("2", "2 attempts")
    said = " ".join(m.value for m in at.markdown).replace("\\", "")
    assert "$0.001000 + 1 unpriced" in said and "it has no budget" in said
    at.selectbox(key="dash_key").set_value(NO_KEY).run()
    assert requests_tile() == ("4", "4 attempts")
    replayable = at.selectbox(key="dash_replay_request").options
    assert len(replayable) == 4 and all("gemini" in option for option in replayable)
