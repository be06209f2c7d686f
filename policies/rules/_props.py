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


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(sorted({k for k in keys if keys.count(k) > 1}))
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_document(value: Any) -> Optional[Any]:
    """A JSON document given either as a string (the usual) or as an object; None when it is not valid JSON.

    A key given twice (``{"Statement": [...], "Statement": [...]}``) makes a document unreadable: which of the
    two a service acts on is not something a rule may guess, so the rules treat it like invalid JSON.
    """
    if isinstance(value, str):
        try:
            return json.loads(value, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
        except ValueError:  # JSONDecodeError, a duplicate key, NaN/Infinity
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


class Deferred:
    """What a stack rule could not judge during a preview, kept until it has judged everything else.

    pulumi_policy turns an ``UnknownValueError`` into one advisory "can't run during preview" for the
    whole stack rule: raised at the first unknown value, it would hide every violation the rule can
    see. ``attempt`` runs one resource's judgement, remembers the first unknown and carries on;
    ``finish`` raises it after the violations were reported, so a preview shows both.
    """

    def __init__(self) -> None:
        self.unknown: Optional[UnknownValueError] = None

    def attempt(self, judge, *args, default: Any = None) -> Any:
        try:
            return judge(*args)
        except UnknownValueError as exc:
            self.unknown = self.unknown or exc
            return default

    def finish(self) -> None:
        if self.unknown is not None:
            raise self.unknown


def dependency_urns(resource: Any, prop: str) -> list[str]:
    """The URNs of the resources a stack resource's ``prop`` was computed from (what the engine tells analyzers)."""
    return [d.urn for d in (getattr(resource, "property_dependencies", None) or {}).get(prop, [])]


def known_items(props: Any, *path: str | int) -> tuple[list[Any], int]:
    """The known items of a list (or a scalar) at ``path``, and how many are not known yet (a preview)."""
    try:
        value = get(props, *path)
    except UnknownValueError:
        return [], 1
    if not is_list(value):
        return ([] if value is None else [value]), 0
    items, unknown = [], 0
    for i in range(len(value)):
        try:
            items.append(value[i])
        except UnknownValueError:
            unknown += 1
    return items, unknown


def unknown_error(where: str) -> UnknownValueError:
    """The SDK's error for a value not known during preview (becomes its advisory "can't run during preview")."""
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    return UnknownValueError(UNKNOWN_STRING_VALUE, [where])
