"""The controls of a `Variant` (who answers, and how), shared by the chat's sidebar and each
Compare column, and the estimated cost of the next request.

Controls are keyed by a prefix ("chat", "cmp0"...). A page loads a session's variant into
them (`load`) when it opens the session or when another tab changed its settings; what the
controls show is then read back (`variant_controls`) and saved when it differs. A setting
the chosen provider ignores says so beside its control.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import streamlit as st
from pydantic import ValidationError

from conductor_core.models import (
    ChatMessage,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    RoutingPolicy,
    Usage,
)
from conductor_core.providers import BaseProvider
from conductor_core.router import Conductor
from conductor_core.structured import EXAMPLE_SCHEMAS, schema_problem
from conductor_core.workbench.variants import Variant

from . import components as ui
from . import state

__all__ = [
    "DEFAULT_VARIANT",
    "default_variants",
    "load",
    "variant_controls",
    "ignored_by",
    "parse_stop",
    "format_stop",
    "CostEstimate",
    "estimate_cost",
    "format_bound",
    "loaded",
    "cost_caption",
    "CHARS_PER_TOKEN",
    "OUTPUTS",
    "output_format",
    "output_control",
    "lacks_structured_output",
]

DEFAULT_VARIANT = Variant(provider="auto", temperature=0.7, max_tokens=256)
#: The controls keep their values while their page is open, even through a run that did not draw
#: them: a run the user interrupted (by editing one column while the page was still drawing
#: the next) would otherwise leave a control to mount at its minimum, 1 token, and send that.
KEEP = "page"
_SETTING_NAMES = {"temperature": "temperature", "top_p": "top_p", "stop": "stop sequences", "seed": "seed"}


def default_variants(c: Conductor, available: Sequence[str], count: int) -> list[Variant]:
    """`count` variants to start a comparison or an experiment with: different providers
    first; with one provider, its models in turn; then the same again."""
    chosen = []
    pairs = [(p, m) for p in available for m in state.models_of(c, p)[:1]] + [
        (p, m) for p in available for m in state.models_of(c, p)[1:]
    ]
    for i in range(count):
        provider, model = pairs[i % len(pairs)] if pairs else (available[0], None)
        chosen.append(Variant(provider=provider, model=model, temperature=0.7, max_tokens=256))
    return chosen


# --- loading and reading ----------------------------------------------------------------------


def _key(prefix: str, name: str) -> str:
    return f"{prefix}_{name}"


def load(prefix: str, variant: Variant) -> None:
    """Put `variant` into the controls keyed by `prefix` (call before they are drawn)."""
    ss = st.session_state
    ss[_key(prefix, "provider")] = variant.provider
    if variant.model:
        ss[_key(prefix, f"model_{variant.provider}")] = variant.model
    if variant.policy is not None:
        ss[_key(prefix, "policy")] = variant.policy.value
    ss[_key(prefix, "temperature")] = float(variant.temperature)
    ss[_key(prefix, "max_tokens")] = int(variant.max_tokens)
    ss[_key(prefix, "top_p")] = variant.top_p
    ss[_key(prefix, "seed")] = variant.seed
    ss[_key(prefix, "stop")] = format_stop(variant.stop)
    ss[_key(prefix, "system")] = variant.system or ""
    _load_output(prefix, variant.response_format)


def parse_stop(text: str) -> tuple[str, ...] | None:
    r"""One stop sequence a line; `\n` and `\t` written out mean a newline and a tab."""
    sequences = []
    for line in text.splitlines():
        if line.strip():
            sequences.append(line.replace("\\n", "\n").replace("\\t", "\t"))
    return tuple(sequences) or None


def format_stop(stop: Sequence[str] | None) -> str:
    return "\n".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in stop or ())


def ignored_by(c: Conductor, name: str) -> dict[str, list[str]]:
    """Setting -> display names of the providers that ignore it: the chosen provider, or for
    AUTO every provider it may choose."""
    names = state.configured_names(c) if name == "auto" else [name]
    ignored: dict[str, list[str]] = {}
    for provider_name in names:
        provider = state.session_providers().get(provider_name) or c.registry.providers.get(provider_name)
        if provider is None:
            continue
        for setting in provider.ignored_settings():
            ignored.setdefault(setting, []).append(state.display_name(c, provider_name))
    return ignored


def _ignored_note(setting: str, ignored: Mapping[str, list[str]], auto: bool) -> None:
    who = ignored.get(setting)
    if not who:
        return
    names = ", ".join(who)
    text = (
        f"If AUTO picks {names}, {_SETTING_NAMES[setting]} is not sent (it does not take it)."
        if auto
        else f"{names} ignores {_SETTING_NAMES[setting]}: it is not sent."
    )
    st.caption(f":orange[:material/block:] {ui.escape_md(text)}")


def variant_controls(
    c: Conductor,
    prefix: str,
    *,
    providers: Sequence[str],
    allow_auto: bool,
    labels: Mapping[str, str],
    compact: bool = False,
    system_label: str | None = None,
) -> Variant | None:
    """Draw the controls; return the variant they show (None if the values are refused, with
    a message beside the control). `compact` (a Compare column) hides the labels that the
    column's header makes obvious; `system_label` names the system prompt's box otherwise."""
    options = (["auto"] if allow_auto else []) + list(providers)
    ss = st.session_state
    if ss.get(_key(prefix, "provider")) not in options and options:
        ss[_key(prefix, "provider")] = options[0]
    provider = st.selectbox(
        "Provider",
        options,
        format_func=lambda n: labels.get(n, n),
        key=_key(prefix, "provider"),
        persist_state=KEEP,
        help="AUTO picks the best healthy provider and falls back when one fails." if allow_auto else None,
        label_visibility="collapsed" if compact else "visible",
    )
    status = state.provider_status(c, provider)
    if status:  # beside the control, never in its option's label (see state.provider_label)
        st.caption(ui.escape_md(status))
    policy = None
    model: str | None = None
    if provider == "auto":
        policy = st.selectbox(
            "AUTO policy",
            [p.value for p in RoutingPolicy],
            key=_key(prefix, "policy"),
            persist_state=KEEP,
            format_func=str.capitalize,
            help="What AUTO optimises for. Balanced: speed, reliability and cost together; Preferred: the highest "
            "rated in the Arena's blind votes (as Balanced for models with fewer than "
            f"{c.settings.preferred_min_votes} votes); Evaluated: for a saved prompt served by the gateway "
            '(model "prompt:NAME@LABEL"), the cheapest model within '
            f"{c.settings.evaluated_margin * 100:g} points of the best judged pass rate on that prompt's runs (here, "
            "without a prompt, as Balanced, and the routing reason says so).",
        )
    elif state.provider_hint(c, provider):
        st.info(
            f"**{ui.escape_md(state.display_name(c, provider))}** is not configured: "
            f"{ui.escape_md(state.provider_hint(c, provider))}.",
            icon=":material/key:",
        )
        st.page_link("views/providers.py", label="Add a key for this session", icon=":material/arrow_forward:")
    else:
        model = _model_control(c, prefix, provider, compact=compact)
    ignored = ignored_by(c, provider)
    auto = provider == "auto"

    def more() -> tuple[float | None, int | None, str]:
        top_p = st.number_input(
            "Top p",
            min_value=0.0,
            max_value=1.0,
            value=None,
            step=0.05,
            key=_key(prefix, "top_p"),
            persist_state=KEEP,
            placeholder="provider default",
            help="Nucleus sampling: only the most likely tokens whose probabilities add up to this. Empty: the provider's default.",
        )
        _ignored_note("top_p", ignored, auto)
        seed = st.number_input(
            "Seed",
            min_value=0,
            max_value=2**31 - 1,
            value=None,
            step=1,
            key=_key(prefix, "seed"),
            persist_state=KEEP,
            placeholder="random",
            help="The same seed asks for the same sampling, where the provider supports it. Empty: random.",
        )
        _ignored_note("seed", ignored, auto)
        stop_text = st.text_area(
            "Stop sequences",
            key=_key(prefix, "stop"),
            persist_state=KEEP,
            height=68,
            placeholder="One a line (\\n for a newline), up to 4",
            help="Generation ends when one of these is produced.",
        )
        _ignored_note("stop", ignored, auto)
        return top_p, seed, stop_text

    # Sensible values when the controls were not loaded (a rerun that raced the page's first
    # load): Streamlit would otherwise start them at their minimum, temperature 0 and 1 token.
    st.session_state.setdefault(_key(prefix, "temperature"), DEFAULT_VARIANT.temperature)
    st.session_state.setdefault(_key(prefix, "max_tokens"), DEFAULT_VARIANT.max_tokens)
    temperature = st.slider(
        "Temperature",
        0.0,
        2.0,
        step=0.05,
        key=_key(prefix, "temperature"),
        persist_state=KEEP,
        help="0 is focused and repeatable; higher is more varied.",
    )
    _ignored_note("temperature", ignored, auto)
    max_tokens = st.number_input(
        "Max tokens",
        min_value=1,
        max_value=4000,
        step=32,
        key=_key(prefix, "max_tokens"),
        persist_state=KEEP,
        help="The most tokens the answer may use (1 to 4000).",
    )
    response_format, output_problem = output_control(c, prefix, [provider], compact=compact)
    hidden = [s for s in ("top_p", "seed", "stop") if s in ignored]
    note = f" · {len(hidden)} ignored" if hidden else ""
    # In a Compare column (itself inside an expander, which cannot nest) a popover instead.
    more_box = (
        st.popover(f"System prompt, top p, seed, stop{note}", icon=":material/tune:", width="stretch")
        if compact
        else st.expander(f"Top p, seed, stop{note}", icon=":material/tune:")
    )
    with more_box:
        if compact:
            system = _system_control(prefix, compact=True)
        top_p, seed, stop_text = more()
    if not compact:
        system = _system_control(prefix, compact=False, label=system_label)
    stop = parse_stop(stop_text)
    if output_problem:
        return None  # said beside the Output control
    try:
        return Variant(
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=int(max_tokens),
            top_p=top_p,
            stop=stop,
            seed=int(seed) if seed is not None else None,
            system=system.strip() or None,
            policy=RoutingPolicy(policy) if policy else None,
            response_format=response_format,
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        st.error(f"These settings cannot be sent: {ui.escape_md(problems)}", icon=":material/error:")
        return None


# --- the output format ------------------------------------------------------------------------

#: The Output control's choices, as a person reads them.
OUTPUTS = ("Text", "JSON object", "JSON schema")
_STARTER = next(iter(EXAMPLE_SCHEMAS))


def _load_output(prefix: str, response_format: object) -> None:
    """The Output control's keys from a variant's response_format (text: the starter schema
    stays in the editor, ready for when JSON schema is chosen)."""
    ss = st.session_state
    if isinstance(response_format, ResponseFormatJsonSchema):
        spec = response_format.json_schema
        ss[_key(prefix, "output")] = "JSON schema"
        ss[_key(prefix, "schema_name")] = spec.name
        ss[_key(prefix, "schema_text")] = json.dumps(spec.schema_, indent=2, ensure_ascii=False)
        ss[_key(prefix, "schema_strict")] = bool(spec.strict)
        return
    ss[_key(prefix, "output")] = "JSON object" if isinstance(response_format, ResponseFormatJsonObject) else "Text"
    ss.setdefault(_key(prefix, "schema_name"), _STARTER.lower())
    ss.setdefault(_key(prefix, "schema_text"), json.dumps(EXAMPLE_SCHEMAS[_STARTER], indent=2))
    ss.setdefault(_key(prefix, "schema_strict"), True)


def _use_example(prefix: str) -> None:
    name = st.session_state.get(_key(prefix, "schema_example"))
    if name in EXAMPLE_SCHEMAS:
        st.session_state[_key(prefix, "schema_text")] = json.dumps(EXAMPLE_SCHEMAS[name], indent=2)
        st.session_state[_key(prefix, "schema_name")] = name.lower()


def output_format(
    choice: str, schema_text: str, name: str, strict: bool
) -> tuple[ResponseFormatJsonObject | ResponseFormatJsonSchema | None, str | None]:
    """The response_format the Output control's values ask for, or why they cannot be sent
    (the schema's JSON error with its line, or what is wrong in the schema and where)."""
    if choice == "JSON object":
        return ResponseFormatJsonObject(type="json_object"), None
    if choice != "JSON schema":
        return None, None
    try:
        schema = json.loads(schema_text or "")
    except ValueError as exc:
        return None, f"The schema is not JSON: {exc}"
    if problem := schema_problem(schema):
        return None, f"The schema is {problem}" if problem.startswith("not") else f"The schema: {problem}"
    clean = (name or "").strip()
    if not clean or len(clean) > 64 or not all(ch.isalnum() or ch in "_-" for ch in clean):
        return None, "Name the schema: letters, digits, _ and - (up to 64), e.g. invoice"
    spec = {"name": clean, "schema": schema, "strict": bool(strict)}
    return ResponseFormatJsonSchema.model_validate({"type": "json_schema", "json_schema": spec}), None


def lacks_structured_output(c: Conductor, chosen: Sequence[str]) -> list[str]:
    """Display names of the providers that would refuse response_format (400): the chosen ones,
    and for AUTO those it may choose."""
    names = [n for name in chosen for n in (state.configured_names(c) if name == "auto" else [name])]
    lacking = []
    for provider_name in names:
        provider = _provider(c, provider_name)
        if provider is not None and "response_format" not in provider.supported_settings:
            lacking.append(state.display_name(c, provider_name))
    return lacking


def output_control(
    c: Conductor, prefix: str, providers: Sequence[str], *, compact: bool
) -> tuple[ResponseFormatJsonObject | ResponseFormatJsonSchema | None, str | None]:
    """Text / JSON object / JSON schema, the schema's editor, and whether the chosen providers
    can honour it. Returns the response_format and, when it cannot be sent, why (shown here)."""
    ss = st.session_state
    if _key(prefix, "output") not in ss:
        _load_output(prefix, None)
    choice = st.segmented_control(
        "Output",
        OUTPUTS,
        key=_key(prefix, "output"),
        persist_state=KEEP,
        required=True,
        help="What the answer must be. JSON schema: the provider is asked to match it (OpenAI's response_format, "
        "Gemini's response schema, Anthropic's structured output), and every answer is checked against it.",
    )
    if choice == "JSON schema":
        name = ss.get(_key(prefix, "schema_name")) or "schema"
        box = (
            st.popover(f"Schema: {name}", icon=":material/data_object:", width="stretch")
            if compact
            else st.expander(f"Schema: {name}", icon=":material/data_object:", expanded=True)
        )
        with box:
            st.selectbox(
                "Start from an example",
                list(EXAMPLE_SCHEMAS),
                index=None,
                key=_key(prefix, "schema_example"),
                placeholder="Invoice, Sentiment, Entities…",
                on_change=_use_example,
                args=(prefix,),
            )
            st.text_input("Name", key=_key(prefix, "schema_name"), persist_state=KEEP, max_chars=64)
            st.text_area(
                "JSON Schema",
                key=_key(prefix, "schema_text"),
                persist_state=KEEP,
                height=220,
                help="JSON Schema (draft 2020-12). Checked before anything is sent.",
            )
            st.checkbox(
                "Strict",
                key=_key(prefix, "schema_strict"),
                persist_state=KEEP,
                help="OpenAI's strict mode: the answer matches the schema exactly (every property required, "
                "no others). Providers without it ignore it; the answer is checked here either way.",
            )
    response_format, problem = output_format(
        choice or "Text",
        ss.get(_key(prefix, "schema_text")) or "",
        ss.get(_key(prefix, "schema_name")) or "",
        bool(ss.get(_key(prefix, "schema_strict"))),
    )
    if problem:
        st.error(ui.escape_md(problem), icon=":material/data_object:")
    elif response_format is not None and (lacking := lacks_structured_output(c, providers)):
        names = ", ".join(dict.fromkeys(lacking))
        text = (
            f"If AUTO picks {names}, the request is refused: it has no structured output."
            if "auto" in providers
            else f"{names}: no structured output, so this request would be refused (400, response_format)."
        )
        st.caption(f":orange[:material/block:] {ui.escape_md(text)}")
    return response_format, problem


def _system_control(prefix: str, *, compact: bool, label: str | None = None) -> str:
    return st.text_area(
        label or ("System prompt" if compact else "System prompt (this conversation)"),
        key=_key(prefix, "system"),
        persist_state=KEEP,
        height=80 if compact else 90,
        placeholder="Optional: how the assistant should behave.",
        help="Sent first with every message of this column."
        if compact
        else "Sent first with every message of this conversation; each Compare column has its own.",
    )


def _model_control(c: Conductor, prefix: str, provider: str, *, compact: bool) -> str | None:
    models = state.models_of(c, provider)
    key = _key(prefix, f"model_{provider}")
    if not models:
        # An endpoint that lists no models and was configured without any: ask for a name
        # rather than send the placeholder "default" (servers that check names answer 404).
        typed = st.text_input(
            "Model",
            key=key,
            persist_state=KEEP,
            placeholder="Type the model name",
            label_visibility="collapsed" if compact else "visible",
            help="This endpoint lists no models: type the name its server expects.",
        )
        if not (typed or "").strip():
            st.warning("Type a model name for this endpoint.", icon=":material/edit:")
            return None
        return typed.strip()
    current = st.session_state.get(key)
    if current is not None and current not in models:
        models = [*models, current]  # a name typed earlier (accept_new_options)
    return st.selectbox(
        "Model",
        models,
        key=key,
        persist_state=KEEP,
        accept_new_options=True,
        label_visibility="collapsed" if compact else "visible",
        help="Listed by the provider; you can also type a model name.",
    )


def loaded(prefix: str) -> bool:
    """Whether the controls keyed by `prefix` hold values (Streamlit forgets a widget's value
    once a page without it has run, so coming back to a page means loading again)."""
    return all(
        _key(prefix, name) in st.session_state for name in ("provider", "temperature", "max_tokens", "system", "output")
    )


# --- cost before sending ----------------------------------------------------------------------

#: Characters a token, cautiously low (English averages about 4), so the bound holds for most text.
CHARS_PER_TOKEN = 3.0
#: Tokens a message costs beyond its text (role markers), as chat formats count them.
TOKENS_PER_MESSAGE = 4


@dataclass
class CostEstimate:
    text: str  # "≤ $0.0012", "free", "unknown", "free to ≤ $0.0031"
    detail: str  # how it was estimated
    bound: float | None  # the largest known cost (None: unknown or nothing priced)


def format_bound(value: float) -> str:
    """A cost with two significant digits, never in exponent notation: $0.0012, $0.000034, $1.25."""
    if value >= 0.01:
        return f"${value:,.4f}".rstrip("0").rstrip(".") if value < 1 else f"${value:,.2f}"
    decimals = max(2, -math.floor(math.log10(value)) + 1)
    return f"${value:.{decimals}f}"


def _input_tokens(messages: Sequence[ChatMessage]) -> int:
    chars = sum(len(m.content) for m in messages)
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)


def _provider(c: Conductor, name: str) -> BaseProvider | None:
    return state.session_providers().get(name) or c.registry.providers.get(name)


def estimate_cost(c: Conductor, variant: Variant, conversation: Sequence[ChatMessage]) -> CostEstimate:
    """What the next request may cost: the conversation as it stands (its system prompt
    included) counted cautiously, plus `max_tokens` of answer, priced by genai-prices
    through the provider. For AUTO: the range over the providers it may choose."""
    messages = variant.request(list(conversation) or [ChatMessage(role="user", content=" ")]).messages
    tokens_in = _input_tokens(messages)
    usage = Usage(input_tokens=tokens_in, output_tokens=variant.max_tokens)
    detail = (
        f"about {tokens_in:,} tokens in (~{CHARS_PER_TOKEN:g} characters a token) + up to {variant.max_tokens:,} out"
    )
    if variant.provider != "auto":
        provider = _provider(c, variant.provider)
        if provider is None:
            return CostEstimate("unknown", "the provider is not configured", None)
        model = variant.model or provider.default_model
        cost = provider.estimate_cost(usage, model)
        if cost is None:
            return CostEstimate("unknown", f"no price is known for {model}", None)
        if cost == 0:
            return CostEstimate(
                "free", "runs on this machine" if variant.provider == "local" else f"{model} is priced at 0", 0.0
            )
        return CostEstimate(f"≤ {format_bound(cost)}", f"{detail}, at {model}'s price", cost)
    # AUTO: each provider it may choose, at its default model.
    costs: dict[str, float | None] = {}
    for name in state.configured_names(c):
        provider = _provider(c, name)
        if provider is not None:
            costs[name] = provider.estimate_cost(usage, provider.default_model)
    priced = {n: v for n, v in costs.items() if v is not None}
    unknown = [n for n, v in costs.items() if v is None]
    if not priced:
        return CostEstimate("unknown", "no price is known for the providers AUTO may choose", None)
    low, high = min(priced.values()), max(priced.values())
    low_text = "free" if low == 0 else f"≤ {format_bound(low)}"
    high_text = "free" if high == 0 else f"≤ {format_bound(high)}"
    text = low_text if low == high else f"{low_text} to {high_text}"
    said = f"AUTO may choose any of {len(costs)} providers; {detail}"
    if unknown:
        names = ", ".join(unknown[:2]) + (f" +{len(unknown) - 2}" if len(unknown) > 2 else "")
        text += f", unknown on {names}"
        said += f"; no price is known for {', '.join(unknown)}"
    return CostEstimate(text, said, high)


def cost_caption(
    c: Conductor, variant: Variant | None, conversation: Sequence[ChatMessage], *, prefix: str = "Next request"
) -> None:
    if variant is None:
        return
    estimate = estimate_cost(c, variant, conversation)
    st.caption(f":material/payments: {prefix}: **{ui.escape_md(estimate.text)}**", help=estimate.detail)
