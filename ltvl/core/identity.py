"""Content-addressed identity for specs, stable as fields are added (open_lth's rule).

A spec's identity is the JSON of the fields that differ from their declared defaults, nested
dataclasses included, plus a format version. So adding a field with a default never changes the
hash of anything written before, and a store written by an older ltvl is still found.

Format history:
- 0 (until 2026-11): every field hashed, defaults included; ``spec.json`` held the full spec.
  The run context (task, data, preset, …) always carried all seven keys as strings.
- 1: only non-default fields; ``spec.json`` holds ``{"format": 1, "identity": …, "spec": …}``.
  A dataclass held in a field with no default (``DenseSpec.train``) is hashed whole, every field;
  fields added to such a class later are declared with :func:`late_field`, so that they enter the
  hash only once set away from their default and older stores keep their names.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ltvl.util.atomic import json_sha256

FORMAT = 1
LATE = "ltvl.late"  # field metadata: added after format 1, hashed only when not at its default


def late_field(default: Any) -> Any:
    """A dataclass field added after format 1 to a class that some spec hashes whole."""
    return dataclasses.field(default=default, metadata={LATE: True})

# Format 0 wrote every context key; these were its defaults (frozen: history, not configuration).
FORMAT0_CONTEXT_DEFAULTS = {"task": "vqa", "data": "easy-vqa", "preset": "minilm", "layers": "2",
                            "checkpoint": "None", "max_len": "16", "eval_limit": "2000"}


def to_json(value: Any) -> Any:
    """A spec value as plain JSON: enums by value, context pairs as a dict, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return {str(k): to_json(v) for k, v in value}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def identity(spec: Any) -> dict[str, Any]:
    """The fields of ``spec`` (a dataclass) that differ from their defaults, recursively."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value, default = getattr(spec, f.name), _default_of(f)
        if default is not dataclasses.MISSING and to_json(value) == to_json(default):
            continue
        if dataclasses.is_dataclass(value) and dataclasses.is_dataclass(default):
            out[f.name] = identity(value)
        else:
            out[f.name] = _whole(value)
    return out


def _whole(value: Any) -> Any:
    """``value`` as JSON, every field of a dataclass included, except late fields at their default."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _whole(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get(LATE) and to_json(getattr(value, f.name)) == to_json(_default_of(f)))}
    return to_json(value)


def identity_sha256(spec: Any) -> str:
    return json_sha256({"format": FORMAT, **identity(spec)})


def identity_from_format0(raw: dict[str, Any], cls: type) -> dict[str, Any]:
    """What a format-0 ``spec.json`` (every field, defaults included) means as a format-1 identity.
    Fields added since are simply absent, i.e. default."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        value, default = raw[f.name], _default_of(f)
        if f.name == "context" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if FORMAT0_CONTEXT_DEFAULTS.get(k) != v}
            if not value:
                continue
        if default is not dataclasses.MISSING and value == to_json(default):
            continue
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            sub = identity_from_format0(value, type(default))
            if sub:
                out[f.name] = sub
        else:
            out[f.name] = value
    return out


def spec_document(spec: Any) -> dict[str, Any]:
    """What ``spec.json`` holds: the format, the identity that is hashed, and the full spec for humans."""
    return {"format": FORMAT, "identity": identity(spec), "spec": to_json(spec)}
