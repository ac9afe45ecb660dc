"""Prompts with versions and labels: a named prompt, every save a new immutable version.

    store = PromptStore(conductor.log)
    v1 = store.save("support-reply", PromptContent(system="You answer for {{company}}.",
                    messages=(PromptMessage(role="user", content="{{question}}"),),
                    variant=Variant(provider="openai", model="gpt-6-luna", temperature=0.2)), by="ana")
    store.move_label("support-reply", "production", v1.version, by="ana")
    store.resolve("support-reply", "production")      # the version the label points at
    system, messages = v1.render({"company": "Acme", "question": "Where is my parcel?"})
    diff(store.version("support-reply", 1), store.version("support-reply", 2))

A version holds the system prompt and messages (text with `{{variables}}`, see templates.py), the
model settings (a `Variant`: target, model, temperature, max tokens, ..., output schema as its
`response_format`, tools) and who saved it when. It never changes: a save is a new version
(1, 2, ...). A label (`production`, `staging`, any name matching `LABEL_PATTERN`) points at one
version; moving it records who moved it from which version to which, and when.

A reference is `NAME`, `NAME@LABEL` or `NAME@3` (a version number); a bare name means the
`production` label. The gateway serves `model: "prompt:NAME@LABEL"` (gateway/openai_api.py).

Tables (beside the request log, created by its migrations):

    prompts              id, name (unique), created_at/_ts, created_by
    prompt_versions      id, (prompt_id, version) unique, created_at/_ts, created_by, note,
                         system, messages (JSON [{role, content}]), variant (JSON Variant)
    prompt_labels        (prompt_id, label) -> version, moved_at/_ts, moved_by
    prompt_label_moves   id, prompt_id, label, from_version (NULL: new label), to_version
                         (NULL: removed), moved_at/_ts, moved_by
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..models import ChatMessage, MessageRole, new_id, utcnow
from ..store import RequestLog, SafeString, SafeText, UTCDateTime
from .templates import Template, TemplateError
from .variants import Variant

__all__ = [
    "DEFAULT_LABEL",
    "LABEL_PATTERN",
    "NAME_PATTERN",
    "LabelMove",
    "PromptContent",
    "PromptDiff",
    "PromptError",
    "PromptMessage",
    "PromptNotFoundError",
    "PromptStore",
    "PromptSummary",
    "PromptVariableError",
    "PromptVersion",
    "SettingChange",
    "check_label",
    "check_name",
    "diff",
    "metadata",
    "parse_reference",
    "as_turns",
]

DEFAULT_LABEL = "production"
#: A prompt's name: letters, digits, `_`, `-`, `.`; no `@`, `:` or `/` (they separate a reference).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: A label starts with a letter (so `@3` is always a version number): lower-case letters, digits, `_`, `-`.
LABEL_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class PromptError(ValueError):
    """The prompt cannot be saved, found or used as asked; the message says what to change."""


class PromptNotFoundError(PromptError):
    """No such prompt, version or label (the gateway answers 404)."""


class PromptVariableError(PromptError):
    """Variables the prompt uses were not given a value."""

    def __init__(self, reference: str, missing: Sequence[str], given: Sequence[str]) -> None:
        self.missing = list(missing)
        names = ", ".join(missing)
        have = ", ".join(given) if given else "none"
        super().__init__(f"prompt {reference} needs a value for: {names} (given: {have})")


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_PATTERN.fullmatch(name):
        raise PromptError(
            f"{name!r} is not a prompt name: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or "
            "digit (no spaces, '@', ':' or '/'), e.g. support-reply"
        )
    return name


def check_label(label: str) -> str:
    label = label.strip()
    if not LABEL_PATTERN.fullmatch(label):
        raise PromptError(
            f"{label!r} is not a label: use 1-32 lower-case letters, digits, '_' or '-', starting with a letter, "
            "e.g. production or staging"
        )
    return label


def parse_reference(reference: str) -> tuple[str, str | int]:
    """`NAME` -> (NAME, "production"); `NAME@staging` -> (NAME, "staging"); `NAME@3` -> (NAME, 3)."""
    name, at, where = reference.strip().partition("@")
    name = check_name(name)
    if not at:
        return name, DEFAULT_LABEL
    where = where.strip()
    if where.isdigit():
        number = int(where)
        if number < 1:
            raise PromptError(f"{reference!r}: versions are numbered from 1")
        return name, number
    return name, check_label(where)


# --- what a version holds ----------------------------------------------------------------------


class PromptMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["user", "assistant"]
    content: str


class PromptContent(BaseModel):
    """What a person saves: system and messages (templates) and the model settings. The
    variant's own `system` is not used: the prompt's `system` is (rendered)."""

    model_config = ConfigDict(frozen=True)

    system: str | None = None
    messages: tuple[PromptMessage, ...] = ()
    variant: Variant

    def checked(self) -> PromptContent:
        """The content as it is stored (blank system as None, the variant's system dropped),
        refused with a message naming the part when a template is malformed or it is empty."""
        system = self.system if self.system and self.system.strip() else None
        if system is None and not any(m.content.strip() for m in self.messages):
            raise PromptError("the prompt is empty: write a system prompt or at least one message")
        for where, text in self._parts(system):
            try:
                Template(text)
            except TemplateError as error:
                raise PromptError(f"{where}: {error}") from None
        return self.model_copy(update={"system": system, "variant": self.variant.model_copy(update={"system": None})})

    def _parts(self, system: str | None) -> list[tuple[str, str]]:
        parts = [("system", system)] if system else []
        return parts + [(f"message {i} ({m.role})", m.content) for i, m in enumerate(self.messages, 1)]

    @property
    def variables(self) -> list[str]:
        """Every variable used, in order of first use (system first), each once."""
        names: dict[str, None] = {}
        for _, text in self._parts(self.system):
            names.update(dict.fromkeys(Template(text).variables))
        return list(names)


class PromptVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    version: int
    created_at: datetime
    created_by: str
    note: str = ""
    content: PromptContent
    labels: tuple[str, ...] = Field(default=(), description="The labels pointing here when it was read.")

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def variables(self) -> list[str]:
        return self.content.variables

    def render(self, values: Mapping[str, Any]) -> tuple[str | None, list[ChatMessage]]:
        """The system prompt and messages with `values` filled in. Every missing variable is
        named at once (`PromptVariableError`)."""
        missing = [name for name in self.variables if values.get(name) is None]
        if missing:
            raise PromptVariableError(self.reference, missing, [str(k) for k in values])
        system = Template(self.content.system).render(values) if self.content.system else None
        messages = [
            ChatMessage(role=MessageRole(m.role), content=Template(m.content).render(values))
            for m in self.content.messages
        ]
        return system, messages

    def variant(self, values: Mapping[str, Any]) -> Variant:
        """The prompt's settings with its rendered system prompt (what Chat and Compare send with)."""
        system, _ = self.render(values)
        return self.content.variant.model_copy(update={"system": system})


class PromptSummary(BaseModel):
    name: str
    latest: int
    updated_at: datetime
    labels: dict[str, int]


class LabelMove(BaseModel):
    label: str
    from_version: int | None = Field(description="None: the label was new.")
    to_version: int | None = Field(description="None: the label was removed.")
    moved_by: str
    moved_at: datetime


def as_turns(messages: Sequence[ChatMessage]) -> tuple[list[tuple[str, str]], str | None]:
    """Rendered messages as a conversation's turns: (user, assistant) pairs already answered
    (Chat and Compare seed them as earlier turns), and the last user message, to send (None
    when the prompt ends with an answer or has no message). Consecutive messages of one role
    are joined with a blank line: a turn has one of each."""
    merged: list[tuple[str, str]] = []
    for m in messages:
        role = "user" if m.role == MessageRole.user else "assistant"
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + (m.content or ""))
        else:
            merged.append((role, m.content or ""))
    if merged and merged[0][0] == "assistant":  # an answer to nothing: its own turn, with an empty prompt
        merged.insert(0, ("user", ""))
    last = merged.pop()[1] if merged and merged[-1][0] == "user" else None
    pairs = [(merged[i][1], merged[i + 1][1]) for i in range(0, len(merged) - 1, 2)]
    return pairs, last


# --- diff --------------------------------------------------------------------------------------


class SettingChange(BaseModel):
    name: str
    before: str
    after: str


class PromptDiff(BaseModel):
    text: str = Field(description="A unified diff of the system prompt and messages ('' when they are the same).")
    settings: list[SettingChange] = Field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.text and not self.settings


def _text_rendering(content: PromptContent) -> list[str]:
    """A stable text form of the system and messages, one block per part."""
    lines: list[str] = []
    if content.system:
        lines += ["[system]", *content.system.splitlines()]
    for m in content.messages:
        lines += [f"[{m.role}]", *m.content.splitlines()]
    return lines


def _setting_text(value: Any) -> str:
    return "—" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def diff(old: PromptVersion, new: PromptVersion) -> PromptDiff:
    """What changed from `old` to `new`: one unified diff of the messages, and each changed setting."""
    text = "\n".join(
        difflib.unified_diff(
            _text_rendering(old.content),
            _text_rendering(new.content),
            fromfile=old.reference,
            tofile=new.reference,
            lineterm="",
        )
    )
    before = old.content.variant.model_dump(mode="json", exclude={"system"})
    after = new.content.variant.model_dump(mode="json", exclude={"system"})
    settings = [
        SettingChange(name=name, before=_setting_text(before.get(name)), after=_setting_text(after.get(name)))
        for name in dict.fromkeys([*before, *after])
        if before.get(name) != after.get(name)
    ]
    return PromptDiff(text=text, settings=settings)


# --- tables ------------------------------------------------------------------------------------

metadata = MetaData()

prompts_table = Table(
    "prompts",
    metadata,
    Column("id", String(), primary_key=True),
    Column("name", SafeString(), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("created_by", SafeString(), nullable=False),
)

versions_table = Table(
    "prompt_versions",
    metadata,
    Column("id", String(), primary_key=True),
    Column("prompt_id", String(), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("created_by", SafeString(), nullable=False),
    Column("note", SafeText()),
    Column("system", SafeText()),
    Column("messages", SafeText(), nullable=False),
    Column("variant", SafeText(), nullable=False),
    UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_version"),
)

labels_table = Table(
    "prompt_labels",
    metadata,
    Column("prompt_id", String(), primary_key=True),
    Column("label", SafeString(), primary_key=True),
    Column("version", Integer(), nullable=False),
    Column("moved_at", UTCDateTime(), nullable=False),
    Column("moved_ts", Double(), nullable=False),
    Column("moved_by", SafeString(), nullable=False),
)

moves_table = Table(
    "prompt_label_moves",
    metadata,
    Column("id", String(), primary_key=True),
    Column("prompt_id", String(), nullable=False),
    Column("label", SafeString(), nullable=False),
    Column("from_version", Integer()),
    Column("to_version", Integer()),
    Column("moved_at", UTCDateTime(), nullable=False),
    Column("moved_ts", Double(), nullable=False),
    Column("moved_by", SafeString(), nullable=False),
    Index("ix_prompt_label_moves_prompt_id", "prompt_id", "moved_ts"),
)


def _variant(data: dict[str, Any]) -> Variant:
    """A stored variant; one naming a provider this process has not registered is still shown."""
    try:
        return Variant.model_validate(data)
    except ValidationError:
        return Variant.model_construct(**data)


class PromptStore:
    """Prompts, their versions and labels, in the request log's database. Thread-safe (one
    engine, short transactions); share one per process."""

    def __init__(self, log: RequestLog) -> None:
        self.log = log
        self.engine = log.engine
        log.require_tables(metadata)

    # --- reading ---------------------------------------------------------------------------

    def _prompt_id(self, conn: Any, name: str) -> str | None:
        return conn.execute(select(prompts_table.c.id).where(prompts_table.c.name == name)).scalar()

    def _require(self, conn: Any, name: str) -> str:
        prompt_id = self._prompt_id(conn, check_name(name))
        if prompt_id is None:
            known = [r for r in conn.execute(select(prompts_table.c.name).order_by(prompts_table.c.name).limit(20))]
            names = ", ".join(r[0] for r in known) or "none yet"
            raise PromptNotFoundError(f"no prompt named {name!r} (prompts: {names}); save it on the Prompts page first")
        return prompt_id

    def summaries(self) -> list[PromptSummary]:
        """Every prompt with its latest version and labels, the most recently saved first."""
        v, p, lab = versions_table.c, prompts_table.c, labels_table.c
        latest = (
            select(v.prompt_id, func.max(v.version).label("latest"), func.max(v.created_ts).label("ts"))
            .group_by(v.prompt_id)
            .subquery()
        )
        stmt = select(p.id, p.name, latest.c.latest, latest.c.ts).join(latest, latest.c.prompt_id == p.id)
        with self.engine.connect() as conn:
            rows = list(conn.execute(stmt))
            labels: dict[str, dict[str, int]] = {}
            for prompt_id, label, version in conn.execute(select(lab.prompt_id, lab.label, lab.version)):
                labels.setdefault(prompt_id, {})[label] = version
        found = [
            PromptSummary(
                name=name,
                latest=latest_version,
                updated_at=datetime.fromtimestamp(ts, tz=UTC),
                labels=dict(sorted(labels.get(prompt_id, {}).items())),
            )
            for prompt_id, name, latest_version, ts in rows
        ]
        return sorted(found, key=lambda s: s.updated_at, reverse=True)

    def labels(self, name: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            prompt_id = self._require(conn, name)
            rows = conn.execute(
                select(labels_table.c.label, labels_table.c.version)
                .where(labels_table.c.prompt_id == prompt_id)
                .order_by(labels_table.c.label)
            )
            return {label: version for label, version in rows}

    def versions(self, name: str) -> list[PromptVersion]:
        """Every version, the newest first."""
        with self.engine.connect() as conn:
            prompt_id = self._require(conn, name)
            rows = conn.execute(
                select(versions_table)
                .where(versions_table.c.prompt_id == prompt_id)
                .order_by(versions_table.c.version.desc())
            ).mappings()
            return self._versions(conn, name, prompt_id, rows)

    def version(self, name: str, number: int) -> PromptVersion:
        with self.engine.connect() as conn:
            prompt_id = self._require(conn, name)
            row = (
                conn.execute(
                    select(versions_table).where(
                        versions_table.c.prompt_id == prompt_id, versions_table.c.version == number
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                latest = conn.execute(
                    select(func.max(versions_table.c.version)).where(versions_table.c.prompt_id == prompt_id)
                ).scalar()
                raise PromptNotFoundError(f"prompt {name!r} has no version {number} (versions 1 to {latest})")
            return self._versions(conn, name, prompt_id, [row])[0]

    def version_by_id(self, version_id: str) -> PromptVersion:
        """The version an experiment run recorded."""
        v, p = versions_table.c, prompts_table.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(p.name, v.prompt_id).join(prompts_table, p.id == v.prompt_id).where(v.id == version_id)
            ).first()
            if row is None:
                raise PromptNotFoundError(f"no prompt version {version_id!r}")
            version = conn.execute(select(versions_table).where(v.id == version_id)).mappings().first()
            return self._versions(conn, row.name, row.prompt_id, [version])[0]

    def resolve(self, reference: str, *, with_labels: bool = True) -> PromptVersion:
        """The version `NAME`, `NAME@LABEL` or `NAME@3` names, in one query (the gateway's path;
        `with_labels=False` leaves out which labels point at it). When there is none, more
        queries find what does exist, for the error."""
        name, where = parse_reference(reference)
        v, p, lab = versions_table.c, prompts_table.c, labels_table.c
        stmt = select(versions_table).join(prompts_table, p.id == v.prompt_id).where(p.name == name)
        if isinstance(where, int):
            stmt = stmt.where(v.version == where)
        else:
            stmt = stmt.join(labels_table, and_(lab.prompt_id == v.prompt_id, lab.version == v.version)).where(
                lab.label == where
            )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
            if row is not None:
                return self._versions(conn, name, row["prompt_id"], [row], with_labels=with_labels)[0]
        if isinstance(where, int):
            return self.version(name, where)  # raises, naming the versions there are
        labels = self.labels(name)
        if where not in labels:
            have = ", ".join(f"{label} (v{v})" for label, v in labels.items()) or "none yet"
            raise PromptNotFoundError(
                f"prompt {name!r} has no label {where!r} (labels: {have}); move one on the Prompts page, "
                f"or name a version ({name}@1)"
            )
        return self.version(name, labels[where])

    def moves(self, name: str, *, limit: int = 100) -> list[LabelMove]:
        """The label moves, the newest first."""
        m = moves_table.c
        with self.engine.connect() as conn:
            prompt_id = self._require(conn, name)
            rows = conn.execute(
                select(m.label, m.from_version, m.to_version, m.moved_by, m.moved_at)
                .where(m.prompt_id == prompt_id)
                .order_by(m.moved_ts.desc(), m.id.desc())
                .limit(limit)
            ).mappings()
            return [LabelMove.model_validate(dict(r)) for r in rows]

    def _versions(
        self, conn: Any, name: str, prompt_id: str, rows: Any, *, with_labels: bool = True
    ) -> list[PromptVersion]:
        pointing: dict[int, list[str]] = {}
        labels = (
            select(labels_table.c.label, labels_table.c.version)
            .where(labels_table.c.prompt_id == prompt_id)
            .order_by(labels_table.c.label)
        )
        for label, version in conn.execute(labels) if with_labels else ():
            pointing.setdefault(version, []).append(label)
        return [
            PromptVersion(
                id=row["id"],
                name=name,
                version=row["version"],
                created_at=row["created_at"],
                created_by=row["created_by"],
                note=row["note"] or "",
                content=PromptContent.model_construct(
                    system=row["system"],
                    messages=tuple(PromptMessage.model_validate(m) for m in json.loads(row["messages"])),
                    variant=_variant(json.loads(row["variant"])),
                ),
                labels=tuple(pointing.get(row["version"], ())),
            )
            for row in rows
        ]

    # --- writing ---------------------------------------------------------------------------

    def save(self, name: str, content: PromptContent, *, by: str, note: str = "") -> PromptVersion:
        """A new version (1 for a new prompt). Versions are never changed afterwards."""
        name = check_name(name)
        content = content.checked()
        now = utcnow()
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    prompt_id = self._prompt_id(conn, name)
                    if prompt_id is None:
                        prompt_id = new_id("prm")
                        conn.execute(
                            insert(prompts_table),
                            {
                                "id": prompt_id,
                                "name": name,
                                "created_at": now,
                                "created_ts": now.timestamp(),
                                "created_by": by,
                            },
                        )
                    latest = conn.execute(
                        select(func.max(versions_table.c.version)).where(versions_table.c.prompt_id == prompt_id)
                    ).scalar()
                    version_id = new_id("pv")
                    conn.execute(
                        insert(versions_table),
                        {
                            "id": version_id,
                            "prompt_id": prompt_id,
                            "version": (latest or 0) + 1,
                            "created_at": now,
                            "created_ts": now.timestamp(),
                            "created_by": by,
                            "note": note.strip() or None,
                            "system": content.system,
                            "messages": json.dumps([m.model_dump() for m in content.messages], ensure_ascii=False),
                            "variant": content.variant.model_dump_json(),
                        },
                    )
                return PromptVersion(
                    id=version_id,
                    name=name,
                    version=(latest or 0) + 1,
                    created_at=now,
                    created_by=by,
                    note=note.strip(),
                    content=content,
                )
            except IntegrityError:
                if attempt == 4:
                    raise
                # Another process saved (or created the prompt) at the same moment: number again.
        raise AssertionError("unreachable")  # pragma: no cover

    def move_label(self, name: str, label: str, version: int, *, by: str) -> LabelMove:
        """Point `label` at `version` (creating the label), and record the move."""
        label = check_label(label)
        self.version(name, version)  # a clear error for an unknown prompt or version
        now = utcnow()
        with self.engine.begin() as conn:
            prompt_id = self._require(conn, name)
            lab = labels_table.c
            before = conn.execute(
                select(lab.version).where(lab.prompt_id == prompt_id, lab.label == label).with_for_update()
            ).scalar()
            if before == version:
                raise PromptError(f"{label!r} already points at version {version}")
            values = {"version": version, "moved_at": now, "moved_ts": now.timestamp(), "moved_by": by}
            if before is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(labels_table), {"prompt_id": prompt_id, "label": label, **values})
                except IntegrityError:
                    raise PromptError(
                        f"someone else created {label!r} at the same moment: look at where it points now, "
                        "then move it again"
                    ) from None
            else:
                conn.execute(update(labels_table).where(lab.prompt_id == prompt_id, lab.label == label).values(values))
            move = LabelMove(label=label, from_version=before, to_version=version, moved_by=by, moved_at=now)
            self._record(conn, prompt_id, move)
        return move

    def remove_label(self, name: str, label: str, *, by: str) -> LabelMove:
        now = utcnow()
        with self.engine.begin() as conn:
            prompt_id = self._require(conn, name)
            lab = labels_table.c
            before = conn.execute(select(lab.version).where(lab.prompt_id == prompt_id, lab.label == label)).scalar()
            if before is None:
                raise PromptNotFoundError(f"prompt {name!r} has no label {label!r}")
            conn.execute(delete(labels_table).where(lab.prompt_id == prompt_id, lab.label == label))
            move = LabelMove(label=label, from_version=before, to_version=None, moved_by=by, moved_at=now)
            self._record(conn, prompt_id, move)
        return move

    @staticmethod
    def _record(conn: Any, prompt_id: str, move: LabelMove) -> None:
        conn.execute(
            insert(moves_table),
            {
                "id": new_id("plm"),
                "prompt_id": prompt_id,
                **move.model_dump(),
                "moved_ts": move.moved_at.timestamp(),
            },
        )
