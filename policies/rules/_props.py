"""Reading resource properties the way the analyzer hands them over.

Properties arrive camelCased, as JSON-like values wrapped in pulumi_policy's
unknown-checking proxies (``Mapping``/``Sequence``, not ``dict``/``list``);
numbers arrive as floats (protobuf ``Struct``), and several AWS booleans are
strings (``"true"``). Touching an unknown value raises ``UnknownValueError``,
which the SDK turns into an advisory "can't run during preview" — so these
helpers read only what a rule needs and never walk a whole object eagerly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Iterator, Optional

from pulumi_policy import EnforcementLevel, PolicyConfigSchema
from pulumi_policy.proxy import UnknownValueError

from infra import hostpaths

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY


def get(value: Any, *path: str | int, default: Any = None) -> Any:
    """``value[path[0]][path[1]]...`` or ``default`` when any step is missing."""
    for key in path:
        if isinstance(key, int):
            if not is_list(value) or not -len(value) <= key < len(value):
                return default
        elif not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    return default if value is None else value


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def as_list(value: Any) -> list[Any]:
    """A list for list-like values, ``[value]`` for a scalar, ``[]`` for None."""
    if value is None:
        return []
    if is_list(value):
        return [value[i] for i in range(len(value))]
    return [value]


def truthy(value: Any) -> bool:
    """AWS launch-template booleans are strings; accept both spellings."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def as_number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def tags_of(props: Mapping[str, Any]) -> dict[str, Any]:
    """Tags as a dict: a ``tags`` map, or the ASG's list of ``{key, value}``."""
    tags = get(props, "tags")
    if isinstance(tags, Mapping):
        return {k: tags[k] for k in tags}
    out: dict[str, Any] = {}
    for tag in as_list(tags):
        if isinstance(tag, Mapping) and "key" in tag:
            out[tag["key"]] = get(tag, "value")
    return out


def json_document(value: Any) -> Optional[Any]:
    """A JSON document given either as a string (the usual) or as an object."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, Mapping) or is_list(value):
        return value
    return None


def under_path(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or inside it, by path components (``/opt/models-evil`` is not
    under ``/opt/models``), after normalising ``..`` and slashes."""
    return hostpaths.under(path, root)


def known(value: Any, *path: str | int) -> Any:
    """``get``, but None for a value not known during preview (an id or name a new resource gets on create)."""
    try:
        return get(value, *path)
    except UnknownValueError:
        return None


def config(args: Any, key: str, default: Any) -> Any:
    """A policy's config value; the CLI fills in schema defaults, the SDK passes {} when none."""
    value = (args.get_config() or {}).get(key)
    return default if value is None else value


def schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties)


def plain(value: Any) -> Any:
    """Proxies unwrapped into dicts/lists, integral floats (protobuf numbers) back to ints."""
    if isinstance(value, Mapping):
        return {k: plain(value[k]) for k in value}
    if is_list(value):
        return [plain(value[i]) for i in range(len(value))]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def iter_mappings(value: Any) -> Iterator[Mapping[str, Any]]:
    for item in as_list(value):
        if isinstance(item, Mapping):
            yield item
