"""MkDocs hooks: pages generated from the code, so they cannot drift from it.

``<!-- settings-table -->`` in a page becomes one table per settings section, rendered
from the pydantic models behind ``StorageSettings``: every ``STORAGE_*`` variable with its
type, default and description. A field whose description names another variable fails
the build. In the API reference, the Sphinx roles of the docstrings (``:class:`X```)
show as plain code.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path, PurePath
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from file_storage.settings import ENV_PREFIX, StorageSettings

SETTINGS_MARKER = "<!-- settings-table -->"
_SPHINX_ROLE = re.compile(r":(?:class|meth|func|attr|exc|mod|data|obj):(?=<code>)")


def on_page_markdown(markdown: str, **_: Any) -> str:
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_tables())
    return markdown


def on_page_content(html: str, **_: Any) -> str:
    return _SPHINX_ROLE.sub("", html)


def settings_rows() -> list[tuple[str, str, list[tuple[str, str, str, str]]]]:
    """``(heading, summary, [(variable, type, default, description), ...])`` per section."""
    top: list[tuple[str, str, str, str]] = []
    sections: list[tuple[str, str, list[tuple[str, str, str, str]]]] = []
    for name, field in StorageSettings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            prefix = f"{ENV_PREFIX}{name.upper()}_"
            rows = [_row(prefix + sub.upper(), f) for sub, f in model.model_fields.items()]
            summary = (model.__doc__ or "").strip().splitlines()[0].split(": ", 1)[-1]
            summary = summary[:1].upper() + summary[1:]
            sections.append((f"{prefix}* ({model.__name__})", summary, rows))
        else:
            top.append(_row(ENV_PREFIX + name.upper(), field))
    summary = "Which backend to build."
    return [(f"{ENV_PREFIX}TYPE (StorageSettings)", summary, top), *sections]


def settings_tables() -> str:
    out: list[str] = []
    for heading, summary, rows in settings_rows():
        out += [f"### `{heading.split(' ')[0]}` {heading.split(' ', 1)[1]}", "", summary, ""]
        out += ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        out += [f"| `{var}` | {kind} | {default} | {text} |" for var, kind, default, text in rows]
        out.append("")
    return "\n".join(out)


def _row(variable: str, field: FieldInfo) -> tuple[str, str, str, str]:
    text = (field.description or "").strip()
    named, sep, rest = text.partition(":")
    if named.startswith(ENV_PREFIX):
        if named.strip() != variable:
            raise ValueError(f"{variable}: its description names {named.strip()}")
        text = rest.strip() if sep else ""
    if not text:
        raise ValueError(f"{variable}: the field has no description to document it")
    return variable, _kind(field), _default(field), _escape(text)


def _kind(field: FieldInfo) -> str:
    kind = _type_name(field.annotation)
    bounds = []
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Gt):
            bounds.append(f"> {meta.gt}")
        elif isinstance(meta, annotated_types.Ge):
            bounds.append(f">= {meta.ge}")
        elif isinstance(meta, annotated_types.Lt):
            bounds.append(f"< {meta.lt}")
        elif isinstance(meta, annotated_types.Le):
            bounds.append(f"<= {meta.le}")
    return kind + (f", {' and '.join(bounds)}" if bounds else "")


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " \\| ".join(_type_name(a) for a in args)
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "text",
        Path: "path",
        SecretStr: "secret",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, PurePath):
        text = value.as_posix()
        value = text if value.is_absolute() or text.startswith(".") else f"./{text}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _escape(text: str) -> str:
    """Plain descriptions in a Markdown table cell: pipes escaped, ``<path>`` kept visible."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
