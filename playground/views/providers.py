"""Providers: every provider's state and what to do about it; a key or an endpoint for this
browser session only."""

from __future__ import annotations

import re

import streamlit as st
from pydantic import SecretStr

from conductor_core.config import EndpointConfig, register_secret
from conductor_core.errors import ProviderError
from conductor_core.models import ProviderState, register_provider_name
from conductor_core.providers import build_provider, get_spec, provider_specs
from playground import components as ui
from playground import dashboard_data as dd
from playground import state

c = state.conductor()
session = state.session_providers()
notes: dict[str, tuple[str, str]] = st.session_state.setdefault("provider_notes", {})  # name -> (kind, message)

st.title("Providers")
st.caption(
    "Conductor works with no keys at all (the local model is the default) and gets better with each key you add. "
    "A key typed here stays in this browser session only: masked, never written to disk, logs, the URL or your "
    "saved sessions. After a reload, or in another tab, type it again (or set it in the environment)."
)

_STATE_BADGE = {
    ProviderState.ready: ("Ready", "green", ":material/check_circle:"),
    ProviderState.loading: ("Loading", "orange", ":material/hourglass_top:"),
    ProviderState.unhealthy: ("Unhealthy", "red", ":material/error:"),
    ProviderState.circuit_open: ("Paused", "orange", ":material/pause_circle:"),
    ProviderState.not_configured: ("Not configured", "gray", ":material/key_off:"),
}


# --- callbacks: they run before the page, read the typed key once and wipe it ------------------
def use_key(name: str) -> None:
    field = f"key_input_{name}"
    key = (st.session_state.get(field) or "").strip()
    st.session_state[field] = ""  # the widget's value must not keep the key in session state
    if not key:
        notes[name] = ("warning", "Paste a key first.")
        return
    register_secret(key)  # redacted everywhere from now on, before anything can echo it
    try:
        session[name] = build_provider(name, c.settings.with_api_key(name, SecretStr(key)))
        notes[name] = ("success", "Key set for this session. Run a health check to verify it.")
    except ProviderError as error:
        notes[name] = ("error", error.message)
    except Exception as exc:  # noqa: BLE001
        notes[name] = ("error", ui.unexpected_error(exc))


def forget(name: str) -> None:
    session.pop(name, None)
    notes[name] = ("info", "Session key removed.")


def add_endpoint() -> None:
    name = (st.session_state.get("ep_name") or "").strip().lower()
    url = (st.session_state.get("ep_url") or "").strip()
    models = [m.strip() for m in (st.session_state.get("ep_models") or "").split(",") if m.strip()]
    key = (st.session_state.get("ep_key") or "").strip()
    st.session_state["ep_key"] = ""
    if not re.fullmatch(r"[a-z][a-z0-9_\-]{0,31}", name or ""):
        notes["__endpoint__"] = ("error", "Name the endpoint with letters, digits, - or _ (for example: ollama).")
        return
    if name in ("auto", *provider_specs()) or name in c.registry.providers:
        notes["__endpoint__"] = ("error", f"{name} is already a provider: choose another name.")
        return
    if not url.startswith(("http://", "https://")):
        notes["__endpoint__"] = ("error", "The base URL starts with http:// or https:// and usually ends in /v1.")
        return
    if key:
        register_secret(key)
    try:
        from conductor_core.providers.openai_compat import OpenAICompatProvider

        secret = SecretStr(key) if key else None
        if not models:
            # Without a list the provider would fall back to the model name "default", which
            # servers that check names (Ollama, vLLM) answer with 404: ask the server instead.
            probe = OpenAICompatProvider.from_endpoint(name, EndpointConfig(base_url=url, api_key=secret), c.settings)
            models = [m for m in probe.get_available_models() if m != state.PLACEHOLDER_MODEL]
            if not models:
                reachable = probe.health_check()
                why = "lists no models" if reachable else f"did not answer ({probe.last_error or 'no reply'})"
                notes["__endpoint__"] = (
                    "error",
                    f"{url} {why}: check the base URL (it usually ends in /v1), or type the model names it serves.",
                )
                return
        endpoint = EndpointConfig(base_url=url, models=models, default_model=models[0], api_key=secret)
        provider = OpenAICompatProvider.from_endpoint(name, endpoint, c.settings)
        register_provider_name(name)  # so requests may name it
        session[name] = provider
        st.session_state.setdefault("session_endpoints", {})[name] = endpoint  # Get code's base URL (share.py)
        notes["__endpoint__"] = (
            "success",
            f"Endpoint {name} added for this session, with {len(models)} model{'s' if len(models) != 1 else ''} "
            f"({', '.join(models[:5])}{'…' if len(models) > 5 else ''}). It is listed on every page.",
        )
        for field in ("ep_name", "ep_url", "ep_models"):
            st.session_state[field] = ""
    except ProviderError as error:
        notes["__endpoint__"] = ("error", error.message)
    except Exception as exc:  # noqa: BLE001
        notes["__endpoint__"] = ("error", ui.unexpected_error(exc))


def health_check() -> None:
    try:
        result = c.health(refresh=True)
        checked = dict(result.providers)
        for name, provider in session.items():
            try:
                checked[name] = bool(provider.health_check())
            except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
                checked[name] = provider.mark_health(False, ui.unexpected_error(exc))
        good = sum(checked.values())
        st.session_state["health_summary"] = f"Health check: {good} of {len(checked)} configured providers answered."
    except Exception as exc:  # noqa: BLE001
        st.session_state["health_summary"] = ui.unexpected_error(exc)


# --- the page ----------------------------------------------------------------------------
top = st.columns([4, 1.3], vertical_alignment="center")
with top[1]:
    st.button(
        "Run health checks", icon=":material/monitor_heart:", on_click=health_check, type="primary", width="stretch"
    )
if st.session_state.get("health_summary"):
    with top[0]:
        st.info(st.session_state["health_summary"], icon=":material/monitor_heart:")

status = c.status(overrides=state.overrides())


def show_note(name: str) -> None:
    kind, message = notes.get(name, (None, None))
    if kind:
        getattr(st, kind)(ui.escape_md(message))


def provider_card(name: str) -> None:
    p = status.providers[name]
    provider = session.get(name) or c.registry.providers.get(name)
    label, color, icon = _STATE_BADGE.get(p.health.state, ("?", "gray", None))
    with st.container(border=True):
        head = st.container(horizontal=True, vertical_alignment="center", gap="small")
        with head:
            title = state.display_name(c, name)
            st.markdown(f"**{ui.escape_md(title)}**" + (f" `{name}`" if title.lower() != name else ""))
            st.badge(label, color=color, icon=icon)
            if name in session:
                st.badge("session", color="violet", icon=":material/person:")
        if name == "local":
            st.caption(state.LOCAL_NOTE_SHORT)
            if provider is not None and p.health.state == ProviderState.ready:
                loaded = getattr(provider, "load_seconds", None)
                st.caption(
                    f"Loaded in {loaded:.1f} s."
                    if loaded
                    else "Loads on first use (a few seconds); later answers start at once."
                )
        detail = p.health.detail
        if p.health.state == ProviderState.not_configured:
            st.markdown(f"To use it: **{ui.escape_md(detail or 'configure it')}**")
        elif p.health.state == ProviderState.loading:
            st.markdown(
                f":material/hourglass_top: {ui.escape_md(detail or 'Loading the model; the first answer waits for it.')}"
            )
        elif p.health.state in (ProviderState.unhealthy, ProviderState.circuit_open):
            why = detail or p.reliability.last_error or "recent requests failed"
            retry = (
                f" It will be tried again in {dd.humanize_seconds(p.reliability.retry_in_s)}."
                if p.reliability.retry_in_s
                else ""
            )
            st.markdown(f"Why: {ui.escape_md(why)}.{retry}")
        facts = []
        if provider is not None:
            facts.append(f"default model `{provider.default_model}`")
        if p.performance.p50_latency_ms:
            facts.append(f"p50 {ui.format_ms(p.performance.p50_latency_ms)}")
        if p.reliability.success_rate is not None:
            facts.append(f"{p.reliability.success_rate:.0%} success")
        facts.append(f"{p.usage.total_requests:,} requests")
        facts.append(f"last check: {p.health.last_check:%H:%M:%S} UTC" if p.health.last_check else "not checked yet")
        st.caption(" · ".join(facts))
        spec = get_spec(name)
        if spec is not None and spec.needs_key and (name in session or p.health.state == ProviderState.not_configured):
            if name in session:
                st.text_input("API key", value="••••••••••••", disabled=True, key=f"key_mask_{name}", type="password")
                st.button(
                    "Forget this key", key=f"forget_{name}", on_click=forget, args=(name,), icon=":material/key_off:"
                )
            else:
                with st.form(f"key_form_{name}", clear_on_submit=True, border=False):
                    env = spec.key_env_vars[0]
                    st.text_input(
                        "API key for this session",
                        type="password",
                        key=f"key_input_{name}",
                        autocomplete="off",
                        placeholder=f"Paste your {state.display_name(c, name)} key (or set {env} before starting)",
                    )
                    st.form_submit_button("Use key", on_click=use_key, args=(name,), icon=":material/key:")
        show_note(name)


names = state.provider_names(c)
left, right = st.columns(2, gap="medium")
for n, name in enumerate(names):
    with left if n % 2 == 0 else right:
        provider_card(name)

st.subheader("Add an OpenAI-compatible endpoint")
st.caption("Ollama, vLLM, LM Studio, llama.cpp server, Groq, OpenRouter… Added for this browser session only.")
with st.form("endpoint_form", border=True):
    a, b = st.columns(2)
    a.text_input("Name", key="ep_name", placeholder="ollama")
    b.text_input("Base URL", key="ep_url", placeholder="http://localhost:11434/v1")
    a.text_input(
        "Models (comma separated)",
        key="ep_models",
        placeholder="empty: the ones its /models lists",
        help="Leave empty to use the models the server lists at /models (Ollama, vLLM and most servers do).",
    )
    b.text_input("API key (optional)", key="ep_key", type="password", autocomplete="off")
    st.form_submit_button("Add endpoint", on_click=add_endpoint, icon=":material/add_link:")
show_note("__endpoint__")
