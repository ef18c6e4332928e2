"""Wire models: frozen dataclasses read from JSON and written back, checked as the CRD checks them.

Why not pydantic: the agent runs on every node under a 50Mi limit, and pydantic costs it 9 MiB (4 for the
pydantic-core library, 5 for the machinery the first model builds) out of about 42. The few shapes brupop
exchanges (the shadow's spec and status, the host's update status) need only what is here: a model is a
dataclass subclassing `Wire`, and its field types say everything: str, int, bool, string enums, `Literal`,
`X | None`, `int | str` (Kubernetes' int-or-string), `list[X]`, `dict[str, Any]`, typed maps `dict[str, X]`,
nested models, `Timestamp`, and `Annotated` constraints (`Pattern`, `Range`, `MaxSize`, `Keys`, `Rule`).
A model may also carry `RULES` that span its fields (`Rule`: a CEL rule for the API server with its
Python twin for the reader, side by side so they cannot drift apart unnoticed). The agent, the controller
and the apiserver read with this one reader, so they agree on what a valid object is, and `crd.py`
derives the cluster's schema from the same fields.

Reading (`from_wire`, `from_json`) checks everything and raises `WireError` naming the first bad field by its
dotted path. Constructing a model in code checks nothing beyond what mypy checks: input from outside the
process always comes through the reader.

JSON from outside comes through `loads`, which refuses what Python's parser would accept but no other JSON
reader would, or what would break later: `NaN` and `Infinity`, nesting deeper than `MAX_DEPTH` (Python's
parser fails at an unpredictable depth with a RecursionError), bytes that are not UTF-8. Strings may still
hold a lone surrogate (`"\\ud800"` is valid JSON syntax but no valid Unicode, and no answer could be
encoded with it): the string reader refuses one, and `invalid_text` finds one anywhere in a value.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Annotated, Any, ClassVar, Final, Literal, Self, Union, get_args, get_origin, get_type_hints

from brupop.models.timestamp import Timestamp

Reader = Callable[[object, str], Any]
Extra = Literal["forbid", "ignore"]
MAX_DEPTH = 64
"""Nesting `loads` accepts: a Kubernetes object as deep as a ConversionReview carries one is about 12."""


class WireError(ValueError):
    """A value that does not fit its model; `location` is the dotted path of the field (`object` for the
    whole value)."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


@dataclass(frozen=True)
class Pattern:
    """`Annotated[str, Pattern(regex)]`: the whole string must match (as the CRD's `pattern` in Go's RE2)."""

    regex: str

    def check(self, value: str, location: str) -> None:
        if re.fullmatch(self.regex, value) is None:
            raise WireError(location, f"{value!r} does not match {self.regex}")

    def schema(self) -> dict[str, Any]:
        return {"pattern": self.regex}


@dataclass(frozen=True)
class Range:
    """`Annotated[int, Range(low, high)]`: bounds included; `format` is the schema's name for the range."""

    low: int
    high: int
    format: str

    def check(self, value: int, location: str) -> None:
        if not self.low <= value <= self.high:
            raise WireError(location, f"{value} is outside {self.low}..{self.high}")

    def schema(self) -> dict[str, Any]:
        return {"format": self.format, "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class MaxSize:
    """`Annotated[str | list[X] | dict[str, X], MaxSize(n)]`: at most n characters, items or keys. The schema
    says `maxLength`, `maxItems` or `maxProperties`, which also bound what a CEL rule over the value may cost
    (the API server refuses a CRD whose rules could cost too much)."""

    limit: int

    def check(self, value: str | list[Any] | dict[str, Any], location: str) -> None:
        if len(value) > self.limit:
            unit = "characters" if isinstance(value, str) else "items" if isinstance(value, list) else "keys"
            raise WireError(location, f"has {len(value)} {unit}, more than the {self.limit} allowed")


@dataclass(frozen=True)
class Rule:
    """A CEL rule the API server enforces (`x-kubernetes-validations`) and its Python twin `check`, which
    the reader runs, so a bad value gets the same message from both. On a field (`Annotated[X, Rule(...)]`)
    both see the field's value; in a model's `RULES` the CEL rule sees the object and `check` the model, and
    `field` names the key the error is about (the API server reports `<path>.<field>`)."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None

    def schema(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field is not None:
            rule["fieldPath"] = f".{self.field}"
        return rule


def cel_quote(text: str) -> str:
    """`text` as a single-quoted CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Keys:
    """`Annotated[dict[str, X], Keys(regex, what)]`: every key must match `regex` (RE2 and Python agree on
    the few constructs used); the schema checks it with a CEL rule, as OpenAPI's `propertyNames` is not
    available to CRDs."""

    regex: str
    what: str

    def check(self, value: dict[str, Any], location: str) -> None:
        for key in value:
            if re.fullmatch(self.regex, key) is None:
                raise WireError(location, self.message())

    def message(self) -> str:
        return f"every key must be {self.what}"

    def schema_rule(self) -> dict[str, str]:
        return {
            "rule": f"self.all(k, k.matches({cel_quote('^' + self.regex + '$')}))",
            "message": self.message(),
        }


def described(text: str, /, **options: Any) -> Any:
    """A field with the description the CRD schema shows. `options` are `dataclasses.field`'s, plus
    `key` (the JSON key, when it is not the field's name) and `schema_required` (the cluster requires the
    key even though the field has a Python default)."""
    key = options.pop("key", None)
    schema_required = options.pop("schema_required", False)
    return field(metadata={"description": text, "key": key, "schema_required": schema_required}, **options)


@dataclass(frozen=True, slots=True)
class WireField:
    name: str
    key: str
    hint: Any
    read: Reader
    required: bool
    description: str | None
    schema_required: bool


class Wire:
    """Base of the wire models. `EXTRA` says what an unknown key is: an error (`forbid`, for what the
    cluster stores, as its schema prunes nothing we write) or ignored (`ignore`, for the host's answers and
    whole Kubernetes objects, which carry more than brupop reads)."""

    __slots__ = ()
    EXTRA: ClassVar[Extra] = "forbid"
    RULES: ClassVar[tuple[Rule, ...]] = ()
    NULLABLE: ClassVar[bool] = True
    """Whether the schema keeps an optional value's null; otherwise the API server drops a null written to it,
    as for a Kubernetes-style spec (a merge patch's null deletes the field either way)."""

    @classmethod
    def from_wire(cls, data: object, *, at: str = "") -> Self:
        if not isinstance(data, Mapping):
            raise WireError(at or "object", f"expected an object, got {_kind(data)}")
        model_fields = wire_fields(cls)
        if cls.EXTRA == "forbid":
            unknown = sorted(set(data) - {f.key for f in model_fields})
            if unknown:
                raise WireError(_join(at, text(unknown[0])), "unknown field")
        values: dict[str, Any] = {}
        for f in model_fields:
            location = _join(at, f.key)
            if f.key in data:
                values[f.name] = f.read(data[f.key], location)
            elif f.required:
                raise WireError(location, "required field missing")
        model = cls(**values)
        for rule in cls.RULES:
            if not rule.check(model):
                where = _join(at, rule.field) if rule.field else at or "object"
                raise WireError(where, rule.message)
        return model

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        return cls.from_wire(loads(raw))

    def to_wire(self) -> dict[str, Any]:
        """Every field under its JSON key, absent values as null (which a merge patch reads as delete)."""
        return {f.key: _dump(getattr(self, f.name)) for f in wire_fields(type(self))}


def annotations_of(metadata: Mapping[str, Any]) -> dict[str, str]:
    """A Kubernetes object's annotations, as strings (none when absent or not a map)."""
    found = metadata.get("annotations")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from outside the process; `WireError` (at `object`) says why it is not acceptable."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise WireError("object", f"nested deeper than {max_depth} levels") from None
    except ValueError as err:  # also bytes that are not UTF-8
        raise WireError("object", f"not JSON ({err})") from None
    if _deeper_than(value, max_depth):
        raise WireError("object", f"nested deeper than {max_depth} levels")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _deeper_than(value: object, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels (iteratively: no recursion limit)."""
    level: list[object] = [value]
    for _ in range(limit + 1):
        inner: list[object] = []
        for item in level:
            if isinstance(item, dict):
                inner.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                inner.extend(v for v in item if isinstance(v, dict | list))
        if not inner:
            return False
        level = inner
    return True


def invalid_text(value: object, *, at: str = "") -> WireError | None:
    """The first string or key in `value` that is not valid Unicode (a lone surrogate), as an error
    naming where it is; None when every text in it can be written as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
        return None
    except UnicodeEncodeError:
        pass
    pending: list[tuple[str, object]] = [(at, value)]
    while pending:
        location, item = pending.pop()
        if isinstance(item, str) and not _encodable(item):
            return WireError(location or "object", f"{shown(item)} is not valid Unicode (a lone surrogate)")
        if isinstance(item, dict):
            for key, inner in item.items():
                if not _encodable(key):
                    return WireError(
                        location or "object", f"the key {shown(key)} is not valid Unicode (a lone surrogate)"
                    )
                pending.append((_join(location, key), inner))
        elif isinstance(item, list):
            pending.extend((_join(location, str(index)), inner) for index, inner in enumerate(item))
    return None


def _encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def shown(value: object) -> str:
    """A value as an error message quotes it: its repr (ASCII-safe for any string), cut to 60 characters."""
    quoted = repr(value)
    return quoted if len(quoted) <= 60 else f"{quoted[:60]}..."


def text(value: str) -> str:
    """A name as an error message shows it: as it is when it is valid, short Unicode, else `shown`."""
    return value if len(value) <= 60 and value.isprintable() and _encodable(value) else shown(value)


_FIELDS: dict[type[Wire], tuple[WireField, ...]] = {}


def wire_fields(model: type[Wire]) -> tuple[WireField, ...]:
    """The model's fields with their readers, worked out once per class."""
    known = _FIELDS.get(model)
    if known is None:
        hints = get_type_hints(model, include_extras=True)
        known = _FIELDS[model] = tuple(
            WireField(
                name=f.name,
                key=f.metadata.get("key") or f.name,
                hint=hints[f.name],
                read=_reader(hints[f.name]),
                required=f.default is MISSING and f.default_factory is MISSING,
                description=f.metadata.get("description"),
                schema_required=bool(f.metadata.get("schema_required")),
            )
            for f in fields(model)  # type: ignore[arg-type]  # every Wire subclass is a dataclass
        )
    return known


def _reader(hint: Any) -> Reader:
    origin = get_origin(hint)
    if origin is Annotated:
        base, *marks = get_args(hint)
        return _constrained(_reader(base), marks)
    if origin in (Union, types.UnionType):
        present = [arg for arg in get_args(hint) if arg is not type(None)]
        inner: Reader
        if set(present) == {int, str}:
            inner = _int_or_string
        elif len(present) == 1:
            inner = _reader(present[0])
        else:
            raise TypeError(f"only `X | None` and `int | str` unions are supported, not {hint!r}")
        if len(present) == len(get_args(hint)):
            return inner
        return lambda value, at: None if value is None else inner(value, at)
    if origin is Literal:
        return _literal(get_args(hint))
    if origin is list:
        return _list(_reader(get_args(hint)[0]))
    if origin is dict:
        value_hint = get_args(hint)[1]
        return _typed(dict, "an object") if value_hint is Any else _map(_reader(value_hint))
    if isinstance(hint, type):
        if issubclass(hint, Wire):
            return lambda value, at: hint.from_wire(value, at=at)
        if issubclass(hint, Enum):
            return _enum(hint)
        if hint is Timestamp:
            return _timestamp
        if hint in _SCALARS:
            return _typed(hint, _SCALARS[hint])
    raise TypeError(f"no wire reader for {hint!r}")


_SCALARS: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false"}


def _typed(kind: type, expected: str) -> Reader:
    def read(value: object, at: str) -> Any:
        # bool is an int in Python, but not in JSON.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise WireError(at, f"expected {expected}, got {_kind(value)}")
        if isinstance(value, str) and not _encodable(value):
            raise WireError(at, f"{shown(value)} is not valid Unicode (a lone surrogate)")
        return value

    return read


def _int_or_string(value: object, at: str) -> int | str:
    # bool is an int in Python, but not in JSON.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise WireError(at, f"expected an integer or a string, got {_kind(value)}")


# Which Python values each constraint applies to (an `int | str` field may carry a Pattern and a Range).
_APPLIES: Final[dict[type, type | tuple[type, ...]]] = {
    Pattern: str,
    Range: int,
    MaxSize: (str, list, dict),
    Keys: dict,
}


def _applies(check: object, value: object) -> bool:
    return isinstance(value, _APPLIES[type(check)])


def _constrained(read: Reader, marks: list[Any]) -> Reader:
    checks = [mark for mark in marks if isinstance(mark, Pattern | Range | MaxSize | Keys)]
    rules = [mark for mark in marks if isinstance(mark, Rule)]

    def constrained(value: object, at: str) -> Any:
        parsed = read(value, at)
        for check in checks:
            if _applies(check, parsed):
                check.check(parsed, at)
        for rule in rules:
            if parsed is not None and not rule.check(parsed):
                raise WireError(at, rule.message)
        return parsed

    return constrained


def _literal(allowed: tuple[Any, ...]) -> Reader:
    def read(value: object, at: str) -> Any:
        if value not in allowed:
            raise WireError(at, f"expected {' or '.join(map(repr, allowed))}, got {value!r}")
        return value

    return read


def _list(read_item: Reader) -> Reader:
    def read(value: object, at: str) -> list[Any]:
        if not isinstance(value, list):
            raise WireError(at, f"expected a list, got {_kind(value)}")
        return [read_item(item, f"{at}.{index}") for index, item in enumerate(value)]

    return read


def _map(read_value: Reader) -> Reader:
    def read(value: object, at: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise WireError(at, f"expected an object, got {_kind(value)}")
        return {str(key): read_value(item, f"{at}.{key}") for key, item in value.items()}

    return read


def _enum(kind: type[Enum]) -> Reader:
    by_value = {member.value: member for member in kind}

    def read(value: object, at: str) -> Enum:
        try:
            return by_value[value]
        except (KeyError, TypeError):
            expected = ", ".join(repr(v) for v in by_value)
            raise WireError(at, f"expected one of {expected}, got {value!r}") from None

    return read


def _timestamp(value: object, at: str) -> Timestamp:
    if not isinstance(value, str):
        raise WireError(at, f"expected an RFC 3339 timestamp string, got {_kind(value)}")
    try:
        return Timestamp.parse(value)
    except ValueError as err:
        raise WireError(at, str(err)) from None


def _dump(value: object) -> Any:
    if isinstance(value, Wire):
        return value.to_wire()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Timestamp):
        return value.text
    if isinstance(value, list):
        return [_dump(item) for item in value]
    return value


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
