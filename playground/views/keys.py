"""Keys: the gateway's keys, each with its limits and its spend this period; make one (shown
once), revoke one. The page only writes rows in the request log's database; every gateway
process re-reads them (conductor_core/keys: KeyRing, every 0.25 s) and enforces them."""

from __future__ import annotations

import streamlit as st

from conductor_core.keys import period_bounds
from playground import access, state
from playground import components as ui
from playground import keys_data as kd

c = state.conductor()
store = state.gateway_keys()
ss = st.session_state

st.title("Keys")
st.caption(
    "Keys for the apps and people that call the gateway, each with the models it may use, rate limits and a "
    "budget. The gateway checks them when it runs with an admin key (`CONDUCTOR_API_KEY`: without one it is open "
    "to anyone, and a key limits nothing) on this database (`CONDUCTOR_DATABASE_URL`); a change here reaches every "
    "gateway process within a second.",
    help="Rate and spend counters are shared by every gateway process through Redis (`CONDUCTOR_REDIS_URL`); "
    "without it each process counts on its own.",
)

#: Signed in, only a workspace's owners make and revoke keys (keys spend); with no login, the
#: local user owns everything, as on a laptop.
MANAGES = not access.signed_in() or access.person().role == "owner"
NOT_OWNER = "Only the workspace's owners make and revoke keys: ask one of them."

_NOTE = "keys_note"  # (kind, text) for the next run: what a callback did
_SECRET = "keys_new_secret"  # (name, key): shown by the next run only, then gone
_CONFIRM = "keys_confirm_revoke"  # the key id whose revocation waits for a yes
_MOST = 1_000_000_000  # rpm and tpm are stored as 32-bit integers (the admin API's bound too)


# --- callbacks: they run before the page is drawn, so the table shows what they did ----------


def _reset_form() -> None:
    ss["key_name"] = ""
    ss["key_owner"] = access.who()
    ss["key_models"] = []
    ss["key_rpm"] = ss["key_tpm"] = ss["key_budget"] = None
    ss["key_period"] = "month"


def create_key() -> None:
    if not MANAGES:  # the form is not drawn for them; a stale one changes nothing
        ss[_NOTE] = ("error", NOT_OWNER)
        return
    name = (ss.get("key_name") or "").strip()
    if not name:
        ss[_NOTE] = ("error", "Name the key: say what it is for (an app, a person), then create it.")
        return
    if len(name) > 200:
        ss[_NOTE] = ("error", f"The name is {len(name)} characters long: keep it to 200.")
        return
    budget = ss.get("key_budget")
    made, secret = store.create(
        name,
        owner=(ss.get("key_owner") or "").strip() or None,
        models=list(ss.get("key_models") or []) or None,
        rpm=ss.get("key_rpm"),
        tpm=ss.get("key_tpm"),
        budget_usd=budget,
        budget_period=ss.get("key_period") or "month",
        created_by=access.who(),
    )
    ss[_SECRET] = (made.name, secret)
    state.key_list(fresh=True)  # the Dashboard's Key filter shows it at once
    _reset_form()


def ask_revoke() -> None:
    ss[_CONFIRM] = ss.get("key_to_revoke")


def revoke_key(key_id: str) -> None:
    ss.pop(_CONFIRM, None)
    if not MANAGES:
        ss[_NOTE] = ("error", NOT_OWNER)
        return
    before = store.get(key_id)
    if before is None:
        ss[_NOTE] = ("error", "That key no longer exists.")
        return
    if before.revoked:  # revoked meanwhile, in another tab or through the admin API
        ss[_NOTE] = ("info", f"{before.name} ({before.prefix}…) was already {kd.status_text(before)}.")
        return
    after = store.revoke(key_id)
    state.key_list(fresh=True)
    when = kd.status_text(after) if after is not None else "revoked"
    ss[_NOTE] = (
        "success",
        f"{before.name} ({before.prefix}…) is {when}: every gateway refuses it within a second (401).",
    )


def cancel_revoke() -> None:
    ss.pop(_CONFIRM, None)


# --- what a callback said, and a new key (once) -----------------------------------------------

note = ss.pop(_NOTE, None)
if note:
    kind, text = note
    getattr(st, kind)(ui.escape_md(text), icon=":material/key:")

made = ss.pop(_SECRET, None)  # out of session state now: a rerun or a reload cannot show it again
if made:
    name, secret = made
    with st.container(border=True):
        st.success(f"Key {ui.escape_md(name)} created.", icon=":material/check_circle:")
        st.warning(
            "Copy it now: it is stored only as a hash, and this page will not show it again.",
            icon=":material/content_copy:",
        )
        st.code(secret, language=None)

# --- the keys -----------------------------------------------------------------------------------

try:
    keys = store.list()
    spends = {k.id: store.spend(k.id, period_bounds(kd.key_period(k))[0]) for k in keys}
except Exception as exc:  # noqa: BLE001 - an unreachable database is a message, not a traceback
    st.error(f"The keys could not be read: {ui.escape_md(ui.unexpected_error(exc))}", icon=":material/error:")
    st.stop()

if not keys:
    st.info("No gateway keys yet: create one below.", icon=":material/key:")
else:
    table = kd.key_table(keys, spends, ui.format_cost)
    st.dataframe(
        table,
        hide_index=True,
        placeholder="—",
        key="keys_table",
        column_order=[c for c in kd.KEY_TABLE_COLUMNS if c != "id"],
        column_config={
            "Key": st.column_config.TextColumn("Key", help="The start of the key, to recognise it: never the rest."),
            "Models": st.column_config.TextColumn("Models", help="What the key may use: any, or these."),
            "RPM": st.column_config.NumberColumn("RPM", format="%d", help="Requests per minute, across gateways."),
            "TPM": st.column_config.NumberColumn("TPM", format="%d", help="Tokens per minute, across gateways."),
            "Spent this period": st.column_config.TextColumn(
                "Spent this period",
                help="From the request log, over the budget's period (a calendar day or month, UTC; the month when "
                "there is no budget). Unknown prices are not free: 'unknown' or '+ N unpriced' says so.",
            ),
            "Used": st.column_config.ProgressColumn(
                "Used", format="percent", min_value=0.0, max_value=1.0, width=90, help="Share of the budget spent."
            ),
            "Status": st.column_config.TextColumn("Status", help="Active, or when it was revoked (UTC)."),
            "Created": st.column_config.TextColumn("Created", help="UTC."),
        },
    )
    active = [k for k in keys if not k.revoked]
    if active and MANAGES:
        st.markdown("##### Revoke a key")
        by_id = {k.id: k for k in active}
        row = st.container(horizontal=True, vertical_alignment="bottom")
        with row:
            st.selectbox(
                "Key to revoke",
                list(by_id),
                format_func=lambda key_id: kd.key_label(by_id[key_id]),
                key="key_to_revoke",
                width=360,
            )
            st.button("Revoke…", icon=":material/block:", key="key_revoke_ask", on_click=ask_revoke)
        pending = by_id.get(ss.get(_CONFIRM) or "")
        if pending is not None:
            with st.container(border=True):
                st.warning(
                    f"Revoke **{ui.escape_md(pending.name)}** ({pending.prefix}…)? Every request with it is refused "
                    "(401) from within a second, on every gateway. A revoked key cannot be used again.",
                    icon=":material/warning:",
                )
                buttons = st.container(horizontal=True)
                buttons.button(
                    "Yes, revoke it",
                    type="primary",
                    icon=":material/block:",
                    key="key_revoke_yes",
                    on_click=revoke_key,
                    args=(pending.id,),
                )
                buttons.button("Cancel", key="key_revoke_no", on_click=cancel_revoke)

# --- make one ------------------------------------------------------------------------------------

if not MANAGES:
    st.caption(NOT_OWNER)
    st.stop()

st.markdown("##### Create a key")
models_by_provider = {name: state.models_of(c, name) for name in c.registry.providers}
choices = kd.model_choices(models_by_provider)
if "key_owner" not in ss:
    ss["key_owner"] = access.who()
with st.form("key_form", border=True, enter_to_submit=False):
    top = st.columns(2)
    top[0].text_input("Name", key="key_name", max_chars=200, placeholder="an app or a person", help="Required.")
    top[1].text_input("Owner", key="key_owner", max_chars=200, help="Who the key is for: a person or a team.")
    st.multiselect(
        "Models",
        choices,
        key="key_models",
        placeholder="Any model",
        format_func=lambda entry: f"{entry} (any of its models)" if entry in models_by_provider else entry,
        help="Empty: any model. A provider: any of its models; 'auto': AUTO, which may route to any provider.",
    )
    limits = st.columns(4)
    for column, label, field in ((limits[0], "Requests / min", "key_rpm"), (limits[1], "Tokens / min", "key_tpm")):
        column.number_input(label, min_value=1, max_value=_MOST, step=1, value=None, key=field, placeholder="no limit")
    limits[2].number_input(
        "Budget (USD)", min_value=0.01, step=1.0, value=None, format="%.2f", key="key_budget", placeholder="none"
    )
    limits[3].selectbox("per", ["month", "day"], key="key_period", help="A calendar month or day (UTC).")
    st.form_submit_button("Create key", type="primary", icon=":material/add:", on_click=create_key)
