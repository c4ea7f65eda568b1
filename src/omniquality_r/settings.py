"""Plain settings dataclasses built straight from a config node: a new knob is one yaml line
and one field. Nested dataclass fields take nested mappings; a key without a field is an
error that names it (a typo in `algo.filter.min_sdt` must not be silently ignored)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value the project cannot use; the message names the key."""


def settings_from(cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
    """`cls(**values)`, recursing into fields whose type is a dataclass; lists become tuples
    where the field is a tuple. Unknown keys raise ConfigError naming `where`.<key>."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        name = where or cls.__name__
        raise ConfigError(f"{name}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    kwargs = {}
    for key, value in values.items():
        kind, name = hints[key], f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name}: expected a mapping, got {value!r}")
            value = settings_from(kind, value, name)
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
