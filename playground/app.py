"""Conductor's playground: `streamlit run playground/app.py`.

Thin pages over `conductor_core`: Playground (chat), Compare, Experiments, Prompts, Arena, Dashboard, Providers,
Keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run` puts playground/ on the path, not the repo
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(
    page_title="Conductor",
    page_icon=str(Path(__file__).resolve().parent / "static" / "icon.svg"),
    layout="wide",
    initial_sidebar_state="auto",
)

from conductor_core.store import SchemaError  # noqa: E402
from playground import (  # noqa: E402
    access,
    state,
)
from playground import components as ui  # noqa: E402

access.require_access()  # a login, when the deployment configures one (secrets.toml)

_HERE = Path(__file__).resolve().parent
# The page scripts live in views/, not pages/: Streamlit treats a pages/ directory next to
# the main script as a legacy multipage app, and a direct link such as /dashboard would then
# run that file alone (no navigation, no page config).
pages = [
    st.Page(_HERE / "views" / "chat.py", title="Playground", icon=":material/forum:", default=True),
    st.Page(_HERE / "views" / "compare.py", title="Compare", icon=":material/view_column:"),
    st.Page(_HERE / "views" / "experiments.py", title="Experiments", icon=":material/science:"),
    st.Page(_HERE / "views" / "prompts.py", title="Prompts", icon=":material/notes:"),
    st.Page(_HERE / "views" / "arena.py", title="Arena", icon=":material/how_to_vote:"),
    st.Page(_HERE / "views" / "dashboard.py", title="Dashboard", icon=":material/monitoring:"),
    st.Page(_HERE / "views" / "providers.py", title="Providers", icon=":material/key:"),
    st.Page(_HERE / "views" / "keys.py", title="Keys", icon=":material/key:"),
]
page = st.navigation(pages)

st.logo(str(_HERE / "static" / "logo.svg"), size="large")

try:
    conductor = state.conductor()
except Exception as exc:  # noqa: BLE001 - a broken configuration is a message, not a traceback
    ui.log.exception("Conductor could not start")
    st.error(
        f"Conductor could not start: {ui.escape_md(ui.redact(f'{type(exc).__name__}: {exc}'))}. "
        "Check the configuration (environment, .env, conductor.toml), then reload the page.",
        icon=":material/error:",
    )
    st.stop()

if conductor.log.schema_error is not None:
    try:
        conductor.log.open()  # checks again (at most every 30 s): someone may have run the upgrade
    except SchemaError as exc:
        st.error(
            f"The request log's database cannot be used by this release: {ui.escape_md(str(exc))}",
            icon=":material/database:",
        )
        st.stop()
    except Exception:  # noqa: BLE001 - unreachable now: each page says so where it reads the log
        pass

with st.sidebar:
    try:
        # From the providers' own state, not Conductor.status(): that reads the request log,
        # and this line is drawn on every rerun of every page.
        ready, configured, loading = state.readiness(conductor)
        mark = ":green[●]" if configured and ready == configured else ":orange[●]" if ready else ":red[●]"
        st.caption(
            f"{mark} {ready} of {configured} configured provider{'s' if configured != 1 else ''} ready"
            + (f" · {loading} loading" if loading else "")
        )
    except Exception as exc:  # noqa: BLE001
        st.caption(f"Status unavailable: {ui.escape_md(ui.unexpected_error(exc))}")

try:
    page.run()
except Exception as exc:  # noqa: BLE001 - never a traceback: say what happened, keep working
    st.error(ui.unexpected_error(exc), icon=":material/error:")
