"""Typed JSON for everything the store keeps: arguments, results, workflow input.

Values are encoded with pydantic ``TypeAdapter``s built from the function's annotations, so
a result comes back from replay as the type it was declared as (a pydantic model, a
dataclass, ``list[int]``...). Serialization runs with ``warnings="error"``: a value that
does not match its annotation, or a type JSON cannot hold, fails at once with an error that
names the function and the type — nothing is pickled behind the user's back.

pandas DataFrames are supported as a tagged JSON table that keeps every column's dtype.
"""

from __future__ import annotations

import inspect
import io
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

import typing_extensions
from pydantic import PlainSerializer, PlainValidator, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from romancy_nb.errors import RomancyError, SerializationError

_TAG = "__romancy_type__"


class InvalidArgumentsError(RomancyError, TypeError):
    """Arguments do not match the function's signature or annotations; nothing was stored."""


# pandas, without importing it unless a DataFrame is really involved


def _is_dataframe_type(tp: Any) -> bool:
    return getattr(tp, "__name__", None) == "DataFrame" and str(
        getattr(tp, "__module__", "")
    ).startswith("pandas")


def _is_dataframe(value: Any) -> bool:
    return _is_dataframe_type(type(value))


def _dataframe_to_json(frame: Any) -> dict[str, Any]:
    return {
        _TAG: "pandas.DataFrame",
        "table": frame.to_json(orient="table", date_unit="ns"),
        "dtypes": [str(dtype) for dtype in frame.dtypes],
    }


def _dataframe_from_json(value: Any) -> Any:
    import pandas as pd

    if _is_dataframe(value):
        return value
    if not (isinstance(value, dict) and value.get(_TAG) == "pandas.DataFrame"):
        raise ValueError("expected a stored pandas DataFrame")
    frame = pd.read_json(io.StringIO(value["table"]), orient="table")
    for column, dtype in zip(frame.columns, value["dtypes"], strict=True):
        if str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


def _any_to_json(value: Any) -> Any:
    if _is_dataframe(value):
        return _dataframe_to_json(value)
    return _ANY.dump_python(value, mode="json", warnings="error")


def _any_from_json(value: Any) -> Any:
    if isinstance(value, dict) and value.get(_TAG) == "pandas.DataFrame":
        return _dataframe_from_json(value)
    return value


_ANY: TypeAdapter[Any] = TypeAdapter(Any)
_DataFrameJson = Annotated[
    Any, PlainSerializer(_dataframe_to_json), PlainValidator(_dataframe_from_json)
]
_AnyJson = Annotated[Any, PlainSerializer(_any_to_json), PlainValidator(_any_from_json)]


def _resolve(tp: Any) -> Any:
    if tp is Any or tp is inspect.Parameter.empty:
        return _AnyJson
    if _is_dataframe_type(tp):
        return _DataFrameJson
    return tp


@lru_cache(maxsize=4096)
def adapter(tp: Any) -> TypeAdapter[Any]:
    """The cached adapter for an annotation (``Any`` handles DataFrames too)."""
    return TypeAdapter(_resolve(tp))


@lru_cache(maxsize=4096)
def _plain_class(tp: Any) -> type | None:
    """The class whose instances may skip the strict check, if ``tp`` is a plain class."""
    if tp is None or tp is type(None):
        return type(None)
    if tp is Any or not isinstance(tp, type) or tp is float or _is_dataframe_type(tp):
        return None  # float is left out: pydantic also accepts an int for it
    try:
        isinstance(None, tp)  # Protocols and other special forms refuse isinstance
    except TypeError:
        return None
    return tp


def _dump(adapter: TypeAdapter[Any], value: Any, checked: bool = False) -> str:
    # The core serializer directly: TypeAdapter.dump_json's Python wrapper costs more than
    # the serialization of a small value, and this runs twice per durable step.
    # warnings="error" turns a value that does not match its annotation into an error
    # (instead of storing something replay would decode as another type), but pydantic-core
    # takes ~1.7 µs a call to set it up; a value already known to be an instance of its
    # annotated class (``checked``) cannot mismatch, so it skips that.
    if checked:
        return adapter.serializer.to_json(value, warnings=False).decode()
    return adapter.serializer.to_json(value, warnings="error").decode()


def _load(adapter: TypeAdapter[Any], text: str) -> Any:
    return adapter.validator.validate_json(text)


def _unstorable(what: str, value: Any, error: Exception) -> SerializationError:
    return SerializationError(
        f"cannot store {what}: a {type(value).__name__} value does not serialize to JSON "
        f"for its annotation ({error}). Annotate it with a pydantic model, a dataclass or a "
        "JSON type, or convert it first.",
        what=what,
        value_type=f"{type(value).__module__}.{type(value).__qualname__}",
    )


def encode(value: Any, tp: Any, what: str) -> str:
    """JSON text of ``value`` as type ``tp``; ``what`` names it in an error."""
    plain = _plain_class(tp)
    try:
        return _dump(adapter(tp), value, plain is not None and isinstance(value, plain))
    except (PydanticSerializationError, ValueError, TypeError) as error:
        raise _unstorable(what, value, error) from None


def decode(text: str | None, tp: Any) -> Any:
    """The value of type ``tp`` that ``encode`` stored as ``text``."""
    if text is None:
        return None
    return _load(adapter(tp), text)


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: Any
    default: Any


class CallShape:
    """A durable function's parameters (after ``ctx``) and result, with their codecs.

    Built lazily at first use so annotations may name types defined after the function
    (as happens in notebooks).
    """

    def __init__(self, fn: typing.Callable[..., Any], what: str) -> None:
        self.what = what
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(
                f"{what} must take the context as its first parameter, "
                f"e.g. def {fn.__name__}(ctx, ...)"
            )
        for p in params[1:]:
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(
                    f"{what} cannot take *args or **kwargs: durable functions record their "
                    "arguments by name and type"
                )
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # names an annotation cannot resolve yet: store as plain JSON
            hints = {}
        self.params = [Parameter(p.name, hints.get(p.name, Any), p.default) for p in params[1:]]
        self.result_type = hints.get("return", Any)
        self._names = [p.name for p in self.params]
        self._signature = signature.replace(parameters=params[1:])
        self._classes = tuple(_plain_class(p.annotation) for p in self.params)
        self._all_plain = all(c is not None for c in self._classes)
        self._args_adapter = adapter(tuple[tuple(_resolve(p.annotation) for p in self.params)])
        self._input_adapter = adapter(
            typing_extensions.TypedDict(  # type: ignore[operator]
                f"{fn.__name__}_input", {p.name: _resolve(p.annotation) for p in self.params}
            )
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Arguments as a positional tuple in parameter order, defaults filled in."""
        if not kwargs and len(args) == len(self.params):
            return args
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as error:
            raise InvalidArgumentsError(f"{self.what}: {error}") from None
        bound.apply_defaults()
        return tuple(bound.arguments[name] for name in self._names)

    def encode_args(self, values: tuple[Any, ...]) -> str:
        try:
            checked = self._all_plain and all(
                isinstance(v, c)  # type: ignore[arg-type]
                for v, c in zip(values, self._classes, strict=True)
            )
            return _dump(self._args_adapter, values, checked)
        except (PydanticSerializationError, ValueError, TypeError) as error:
            raise InvalidArgumentsError(
                f"cannot record the arguments of {self.what}: {error}. Pass values of the "
                "annotated types, or annotate the parameters with storable types.",
                what=self.what,
            ) from None

    def decode_args(self, text: str) -> tuple[Any, ...]:
        return tuple(_load(self._args_adapter, text))

    def validate_input(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """Coerce a workflow's arguments to their annotated types (dicts → models...)."""
        try:
            data = self._input_adapter.validate_python(dict(zip(self._names, values, strict=True)))
        except ValidationError as error:
            raise InvalidArgumentsError(
                f"wrong arguments for {self.what}:\n{error}", what=self.what
            ) from None
        return tuple(data[name] for name in self._names)

    def encode_input(self, values: tuple[Any, ...]) -> str:
        """A workflow's input as a JSON object keyed by parameter name (for find_instances)."""
        try:
            data = dict(zip(self._names, values, strict=True))
            return _dump(self._input_adapter, data)
        except (PydanticSerializationError, ValueError, TypeError) as error:
            raise InvalidArgumentsError(
                f"cannot store the input of {self.what}: {error}", what=self.what
            ) from None

    def decode_input(self, text: str) -> tuple[Any, ...]:
        data = _load(self._input_adapter, text)
        return tuple(data[name] for name in self._names)

    def encode_result(self, value: Any) -> str:
        return encode(value, self.result_type, f"the result of {self.what}")

    def decode_result(self, text: str | None) -> Any:
        return decode(text, self.result_type)
