"""Typed JSON for everything the store keeps: arguments, results, workflow input, messages.

A stored value must come back from replay exactly as the first run saw it, or be refused at
the call that would store it, with an error naming what and the type. Three rules:

- **Annotated values** go through a pydantic ``TypeAdapter`` built from the annotation, so
  a result replays as the declared type (a model, a dataclass, ``set[int]``...). A value that
  does not match its annotation fails at once (``warnings="error"``). ``bytes`` are stored as
  base64 (a model's own config decides for its fields).
- **Unannotated (``Any``) values** are JSON's own values only — ``None``, ``bool``, ``int``,
  finite ``float``, ``str``, ``list``, ``dict`` with ``str`` keys — plus ``bytes`` and
  classes with a registered :class:`Codec`, stored as tagged objects
  (``{"__romancy_type__": tag, ...}``). Anything JSON would silently turn into something
  else is refused: a tuple or set (a list on replay), a model (a dict), a generator (consumed
  by storing it).
- **Everywhere**: no NaN or infinity (JSON has neither; the stored text stays valid JSON for
  SQLite's ``json_extract``), and no nesting deeper than :data:`MAX_DEPTH`, the limit of the
  JSON reader replay uses.

Classes JSON cannot hold (a data frame library's, a user's own) are added with :func:`register`;
the engine itself knows only ``bytes``. Checks stay off the hot path: a small value pays a
length test and a substring search on its JSON text.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime
import decimal
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Annotated, Any

import pydantic_core
import typing_extensions
from pydantic import (
    BaseModel,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticSerializationError

from romancy_nb.errors import RomancyError, SerializationError

TAG = "__romancy_type__"
"""The key that marks a tagged value (bytes, a registered codec's class) in stored JSON."""

MAX_DEPTH = 200
"""Deepest nesting stored: pydantic-core's JSON reader (jiter) refuses level 201."""


class InvalidArgumentsError(RomancyError, TypeError):
    """Arguments do not match the function's signature or annotations; nothing was stored."""


class UnresolvedAnnotationError(RomancyError, TypeError):
    """A durable function's annotations name something that does not exist (yet).

    Raised at first use, not cached: define the name (a later notebook cell) and call again.
    """


# the codec registry


@dataclass(frozen=True)
class Codec:
    """How instances of a class JSON cannot hold are stored: a tagged JSON object.

    ``handles(cls)`` recognises the class — it is called with annotations and with the
    classes of values, so it can compare names without importing the class's library.
    ``encode(value)`` gives the object's JSON fields; ``decode(fields)`` rebuilds the value.
    The stored form is ``{"__romancy_type__": tag, **fields}``, under an annotation of the
    class and inside unannotated values alike.
    """

    tag: str
    handles: Callable[[type], bool]
    encode: Callable[[Any], dict[str, Any]]
    decode: Callable[[dict[str, Any]], Any]


def _to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _from_base64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


BYTES = Codec(
    "bytes",
    lambda cls: cls is bytes,
    lambda value: {"base64": _to_base64(value)},
    lambda fields: _from_base64(fields["base64"]),
)
"""The one codec the engine has: ``bytes`` inside unannotated values (annotated ``bytes``
are plain base64 strings: the annotation says what they are)."""

_codecs: dict[str, Codec] = {BYTES.tag: BYTES}
_by_class: dict[type, Codec | None] = {}


def register(codec: Codec) -> None:
    """Store the classes ``codec`` handles through it from now on (one codec per tag).

    Register before the first workflow runs: call shapes already built keep their codecs.
    """
    if codec.tag in _codecs:
        raise ValueError(f"a codec with the tag {codec.tag!r} is already registered")
    _codecs[codec.tag] = codec
    _forget()


def unregister(tag: str) -> None:
    """Remove the codec registered under ``tag`` (tests; a notebook re-running a cell)."""
    _codecs.pop(tag, None)
    _forget()


def for_tag(tag: str) -> Codec | None:
    """The codec that stored values tagged ``tag``, if registered."""
    return _codecs.get(tag)


def for_class(cls: type) -> Codec | None:
    """The codec for instances of ``cls``, if any (looked up once per class)."""
    try:
        return _by_class[cls]
    except KeyError:
        found = next((c for c in _codecs.values() if c.handles(cls)), None)
        _by_class[cls] = found
        return found


def _forget() -> None:
    _by_class.clear()
    for cache in (adapter, coder, _may_hold_float, _plain_class):
        cache.cache_clear()


# refusing values, with where and why


class _Refused(ValueError):
    """Why a value cannot be stored, and where in it (filled in while unwinding)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def describe(self, root: str) -> str:
        """The reason, and where: ``value['rows'][3]`` for a ``root`` named ``value``."""
        return f"{self.reason} (at {root}{''.join(self.path)})" if self.path else self.reason


def _unsupported(value: Any) -> _Refused:
    name = _type_name(value)
    if isinstance(value, collections.abc.Iterator | collections.abc.AsyncIterator):
        return _Refused(
            f"holds a {name}, which storing would consume (it would come back as a list): "
            "return a list instead"
        )
    return _Refused(
        f"holds a {name}, which JSON would change (it would come back as another type): "
        "annotate it with its type (a pydantic model, a dataclass, tuple[int, str], "
        "set[int]...) or use JSON values, bytes, or a class with a registered codec"
    )


def _non_finite(value: float) -> _Refused:
    return _Refused(f"holds the float {value!r}, which JSON cannot hold (no NaN or infinity)")


_TOO_DEEP = (
    f"nests deeper than {MAX_DEPTH} levels where it is stored, more than the JSON reader "
    "replay uses can read back"
)


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


# unannotated values: JSON's own, bytes and registered classes (tagged)


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready data, exactly reversible by :func:`_untag`, or ``_Refused``."""
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        if value - value == 0.0:  # false for NaN and ±inf
            return value
        raise _non_finite(value)
    if depth >= MAX_DEPTH:
        raise _Refused(_TOO_DEEP)
    if cls is list:
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_jsonable(item, depth + 1))
            except _Refused as refused:
                refused.path.insert(0, f"[{index}]")
                raise
        return items
    if cls is dict:
        if TAG in value:
            raise _Refused(f"holds a dict with the key {TAG!r}, which is reserved")
        fields = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _Refused(
                    f"holds a dict key of type {_type_name(key)}, which JSON would turn "
                    "into a str: annotate the dict (dict[int, str]...) or use str keys"
                )
            try:
                fields[key] = _jsonable(item, depth + 1)
            except _Refused as refused:
                refused.path.insert(0, f"[{key!r}]")
                raise
        return fields
    codec = for_class(cls)
    if codec is None:
        raise _unsupported(value)
    return _tagged(codec, value, depth)


def _jsonable_any(value: Any) -> Any:
    return _jsonable(value)  # one parameter: pydantic would pass a second one its info


def _untag(value: Any) -> Any:
    """Read data that :func:`_jsonable` wrote: tagged objects become their values again."""
    cls = type(value)
    if cls is list:
        return [_untag(item) for item in value]
    if cls is dict:
        tag = value.get(TAG)
        if tag is None:
            return {key: _untag(item) for key, item in value.items()}
        codec = for_tag(tag) if isinstance(tag, str) else None
        if codec is None:
            raise ValueError(
                f"it holds a value tagged {tag!r}, and no codec for that tag is registered "
                "in this process (import the module that registers it)"
            )
        return _decode_tagged(codec, value)
    return value


def _any_value(value: Any, info: Any) -> Any:
    # Python-mode validation (a workflow's arguments before they are stored) keeps objects
    # as they are; only stored JSON holds tags.
    return _untag(value) if info.mode == "json" else value


_AnyJson = Annotated[Any, PlainSerializer(_jsonable_any), PlainValidator(_any_value)]


def _tagged(codec: Codec, value: Any, depth: int = 0) -> dict[str, Any]:
    # The codec's fields follow the unannotated rules too (so they may hold bytes, and
    # never a NaN that would make the stored text invalid JSON).
    return {TAG: codec.tag, **_jsonable(codec.encode(value), depth)}


def _decode_tagged(codec: Codec, stored: dict[str, Any]) -> Any:
    return codec.decode({key: _untag(item) for key, item in stored.items() if key != TAG})


def _to_tagged(codec: Codec, value: Any) -> dict[str, Any]:
    return _tagged(codec, value)  # one parameter after the codec: see _jsonable_any


def _from_tagged(codec: Codec, value: Any) -> Any:
    if codec.handles(type(value)):
        return value
    if not (isinstance(value, dict) and value.get(TAG) == codec.tag):
        raise ValueError(f"expected a stored {codec.tag}")
    return _decode_tagged(codec, value)


def _bytes_from_json(value: Any, handler: Any, info: Any) -> Any:
    if info.mode == "json" and isinstance(value, str):
        return _from_base64(value)
    return handler(value)  # pydantic's own bytes rules for Python values


_Base64Bytes = Annotated[
    bytes,
    PlainSerializer(_to_base64, when_used="json"),
    WrapValidator(_bytes_from_json),
]
"""Annotated ``bytes``: base64 in JSON (pydantic's default, UTF-8, refuses most bytes)."""


@lru_cache(maxsize=256)
def _codec_type(codec: Codec) -> Any:
    return Annotated[
        Any,
        PlainSerializer(partial(_to_tagged, codec)),
        PlainValidator(partial(_from_tagged, codec)),
    ]


# annotations


_ITERATORS = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
}
_BARE = {list: list[Any], dict: dict[str, Any], tuple: tuple[Any, ...], set: set[Any]}
_CONTAINERS = {
    list,
    dict,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.Mapping,
}
_UNIONS = (typing.Union, types.UnionType)


def resolve(tp: Any) -> Any:
    """The annotation pydantic is given: ``Any`` (also inside containers) and codec classes
    swapped for their exact codecs; iterators refused (storing one consumes it)."""
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return _AnyJson
    if tp in _ITERATORS or typing.get_origin(tp) in _ITERATORS:
        raise SerializationError(
            f"values annotated {_show(tp)} cannot be stored: an iterator is consumed by "
            "storing it and would replay as something else; annotate it as a list "
            "(list[int]...) and return a list",
            value_type=_show(tp),
        )
    if isinstance(tp, type):
        if tp in _BARE:
            return resolve(_BARE[tp])
        if tp is bytes:
            return _Base64Bytes
        codec = for_class(tp)
        return _codec_type(codec) if codec is not None else tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if not args or not (origin in _CONTAINERS or origin in _UNIONS):
        return tp
    keep = 1 if origin in (dict, collections.abc.Mapping) else 0  # dict keys stay as typed
    resolved = args[:keep] + tuple(a if a is Ellipsis else resolve(a) for a in args[keep:])
    if resolved == args:
        return tp
    return typing.Union[resolved] if origin in _UNIONS else origin[resolved]  # noqa: UP007


def _show(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__qualname__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


@lru_cache(maxsize=4096)
def adapter(tp: Any) -> TypeAdapter[Any]:
    """The cached adapter for an annotation, with the exact codecs of :func:`resolve`."""
    return TypeAdapter(resolve(tp))


_SCALARS = {
    int,
    str,
    bool,
    bytes,
    type(None),
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    decimal.Decimal,
}


@lru_cache(maxsize=4096)
def _may_hold_float(tp: Any, walked: bool = True) -> bool:
    """Whether pydantic may meet a float under ``tp`` (and silently store NaN as ``null``).

    Decided once per annotation, so values that cannot hold a float (a model of strings and
    ints...) skip the check. ``Any`` parts are checked by :func:`_jsonable` itself (``walked``)
    except inside a model or dataclass, whose fields pydantic serializes on its own.
    """
    if tp is Any or tp is inspect.Parameter.empty or tp in _BARE:
        return not walked
    if tp is None or tp in _SCALARS:
        return False
    if isinstance(tp, type):
        if tp is float or for_class(tp) is not None:
            return tp is float
        fields = _field_types(tp)
        if fields is None or tp in _visiting:  # unknown, or a recursive type: assume so
            return True
        _visiting.add(tp)
        try:
            return any(_may_hold_float(f, False) for f in fields)
        except TypeError:  # an unhashable field annotation: assume so
            return True
        finally:
            _visiting.discard(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return any(isinstance(a, float) for a in args)
    if origin is Annotated:
        return _may_hold_float(args[0], walked)
    if args:
        return any(_may_hold_float(a, walked) for a in args if a is not Ellipsis)
    return True


_visiting: set[type] = set()


def _field_types(cls: type) -> list[Any] | None:
    """The types a model, dataclass, TypedDict, NamedTuple or Enum serializes, if known."""
    try:
        if issubclass(cls, BaseModel):
            if cls.model_config.get("extra") == "allow":
                return None  # extra fields may be anything
            return [f.annotation for f in cls.model_fields.values()] + [
                f.return_type for f in cls.model_computed_fields.values()
            ]
        if issubclass(cls, enum.Enum):
            return [type(member.value) for member in cls]
        if (
            dataclasses.is_dataclass(cls)
            or typing_extensions.is_typeddict(cls)
            or (issubclass(cls, tuple) and hasattr(cls, "_fields"))
        ):
            return list(typing.get_type_hints(cls).values())
    except Exception:  # an annotation that does not resolve: pydantic will say so
        return None
    return None


@lru_cache(maxsize=4096)
def _plain_class(tp: Any) -> type | None:
    """The class whose instances may skip the strict check, if ``tp`` is a plain class.

    ``Any`` is ``object``: every value matches it, and :func:`_jsonable` checks it itself.
    """
    if tp is None or tp is type(None):
        return type(None)
    if tp is Any or tp is inspect.Parameter.empty:
        return object
    if not isinstance(tp, type) or tp is float or tp in _BARE or for_class(tp) is not None:
        return None  # float is left out: pydantic also accepts an int for it
    try:
        isinstance(None, tp)  # Protocols and other special forms refuse isinstance
    except TypeError:
        return None
    return tp


# checks on the JSON text (cheap unless the text says there is something to look at)


def _check_finite(serializer: Any, value: Any) -> None:
    """Refuse a NaN or infinity that pydantic stored as ``null`` (or as a bare constant)."""
    _find_non_finite(serializer.to_python(value, warnings=False))


def _find_non_finite(value: Any) -> None:
    if isinstance(value, float):
        if value - value != 0.0:
            raise _non_finite(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                _find_non_finite(item)
            except _Refused as refused:
                refused.path.insert(0, f".{key}" if isinstance(key, str) else f"[{key!r}]")
                raise
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            try:
                _find_non_finite(item)
            except _Refused as refused:
                refused.path.insert(0, f"[{index}]")
                raise


_SMALL = MAX_DEPTH
"""Texts this short are never scanned: nesting even ``MAX_DEPTH - 1`` deep takes twice that."""


def _check_depth(text: bytes, limit: int) -> None:
    """Refuse text nested deeper than ``limit``: it takes ``2 * limit`` bytes to, and more
    brackets than ``limit``; only such a text is read back to be sure."""
    if len(text) <= 2 * limit or text.count(b"[") + text.count(b"{") <= limit:
        return
    if limit < MAX_DEPTH:  # an argument inside its record: one level is the record's
        text = b"[" * (MAX_DEPTH - limit) + text + b"]" * (MAX_DEPTH - limit)
    try:
        pydantic_core.from_json(text)
    except ValueError as error:
        if "recursion limit" in str(error):
            raise _Refused(_TOO_DEEP) from None
        raise


def dump_json(
    adapter: TypeAdapter[Any], value: Any, *, checked: bool, floats: bool, depth: int = 0
) -> bytes:
    # The core serializer directly: TypeAdapter.dump_json's Python wrapper costs more than
    # the serialization of a small value, and this runs twice per durable step.
    # warnings="error" turns a value that does not match its annotation into an error
    # (instead of storing something replay would decode as another type), but pydantic-core
    # takes ~1.7 µs a call to set it up; a value already known to be an instance of its
    # annotated class (``checked``) cannot mismatch, so it skips that.
    serializer = adapter.serializer
    text = serializer.to_json(value, warnings=False if checked else "error")
    if floats and (b"null" in text or b"NaN" in text or b"Infinity" in text):
        _check_finite(serializer, value)
    if len(text) > _SMALL:
        _check_depth(text, MAX_DEPTH - depth)
    return text


ENCODE_ERRORS = (PydanticSerializationError, ValueError, TypeError)


def reason(error: Exception) -> str:
    if isinstance(error, _Refused):
        return error.reason
    if isinstance(error, PydanticSerializationError) and "depth exceeded" in str(error):
        return _TOO_DEEP
    return f"does not serialize to JSON for its annotation ({error})"


def load_failure(what: str, tp: Any, error: Exception) -> SerializationError:
    if "recursion limit" in str(error):
        detail = f"it nests deeper than {MAX_DEPTH} levels"
    else:
        detail = str(error)
    return SerializationError(
        f"cannot read {what} back from the store as {_show(tp)}: {detail}. The stored "
        "value no longer matches its annotation (did the code change while the instance "
        "waited?); restore the old type, or start a new instance.",
        what=what,
        value_type=_show(tp),
    )


class Coder:
    """Encode and decode for one annotation, its checks decided once."""

    __slots__ = ("adapter", "any", "floats", "plain", "tp")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.any = resolve(tp) is _AnyJson
        self.adapter = adapter(tp)
        self.plain = _plain_class(tp)
        self.floats = _may_hold_float(tp)

    def dump(self, value: Any, depth: int = 0) -> bytes:
        if self.any:  # no pydantic between the check and the text: it is exact already
            return pydantic_core.to_json(_jsonable(value, depth))
        checked = self.plain is not None and isinstance(value, self.plain)
        return dump_json(self.adapter, value, checked=checked, floats=self.floats, depth=depth)

    def encode(self, value: Any, what: str) -> str:
        try:
            return self.dump(value).decode()
        except ENCODE_ERRORS as error:
            raise SerializationError(
                f"cannot store {what}: it {describe(error, value, 'it')}",
                what=what,
                value_type=f"{type(value).__module__}.{type(value).__qualname__}",
            ) from None

    def load(self, text: str, what: str) -> Any:
        try:
            if self.any:
                value = pydantic_core.from_json(text)
                return _untag(value) if TAG in text else value
            return self.adapter.validator.validate_json(text)
        except (ValidationError, ValueError, KeyError, TypeError) as error:
            raise load_failure(what, self.tp, error) from None


def describe(error: Exception, value: Any, root: str) -> str:
    if isinstance(error, _Refused):
        return error.describe(root)
    return f"is a {_type_name(value)} that {reason(error)}"


@lru_cache(maxsize=4096)
def coder(tp: Any) -> Coder:
    return Coder(tp)


def encode(value: Any, tp: Any, what: str) -> str:
    """JSON text of ``value`` as type ``tp``; ``what`` names it in an error."""
    return coder(tp).encode(value, what)


def decode(text: str | None, tp: Any, what: str = "a stored value") -> Any:
    """The value of type ``tp`` that ``encode`` stored as ``text``; ``what`` names it in an
    error (a stored value that no longer matches its annotation)."""
    if text is None:
        return None
    return coder(tp).load(text, what)


def encode_message(data: Any, what: str) -> str:
    """JSON text of a message's (or event's) data.

    The receiver says what type to read it as (``model=``), so a pydantic model or a
    dataclass is stored as its JSON object; everything else follows the unannotated rules.
    """
    cls = type(data)
    is_schema = isinstance(data, BaseModel) or (
        dataclasses.is_dataclass(data) and not isinstance(data, type)
    )
    return encode(data, cls if is_schema else Any, what)


def decode_message(value: Any, model: Any, what: str) -> Any:
    """A message's data from its parsed JSON, as ``model`` when one is given."""
    try:
        value = _untag(value)
        return value if model is None else adapter(model).validate_python(value)
    except (ValidationError, ValueError, KeyError, TypeError) as error:
        raise load_failure(what, Any if model is None else model, error) from None


# a durable function's call shape
