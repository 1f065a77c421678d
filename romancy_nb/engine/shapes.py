"""The call shape of a durable function: its parameters after ``ctx``, its result, and
the codecs that store them (``romancy_nb.engine.codec``).

Built lazily at first use, so annotations may name types defined after the function (as
happens in notebooks); an annotation that still does not resolve then is an error, never a
silent ``Any``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typing_extensions
from pydantic import TypeAdapter, ValidationError

from romancy_nb.engine import codec
from romancy_nb.engine.codec import InvalidArgumentsError, UnresolvedAnnotationError
from romancy_nb.errors import SerializationError


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: Any
    default: Any


def _type_hints(fn: Callable[..., Any], what: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as error:
        name = getattr(error, "name", None)
        named = f" {name!r}" if isinstance(name, str) else ""
        raise UnresolvedAnnotationError(
            f"{what} has an annotation that does not codec.resolve: {error}. Define or import"
            f"{named or ' it'} before the first call (in a notebook, run that cell first); "
            "the annotation decides how values are stored, so romancy_nb does not guess.",
            what=what,
            name=name,
        ) from None


class CallShape:
    """A durable function's parameters (after ``ctx``) and result, with their codecs.

    Built lazily at first use so annotations may name types defined after the function
    (as happens in notebooks); a name that still does not codec.resolve then is an error.
    """

    def __init__(self, fn: Callable[..., Any], what: str) -> None:
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
        hints = _type_hints(fn, what)
        self.params = [Parameter(p.name, hints.get(p.name, Any), p.default) for p in params[1:]]
        self.result_type = hints.get("return", Any)
        self._names = [p.name for p in self.params]
        self._signature = signature.replace(parameters=params[1:])
        try:
            resolved = [codec.resolve(p.annotation) for p in self.params]
            self._result = codec.coder(self.result_type)
        except SerializationError as error:
            raise SerializationError(f"{what}: {error}", what=what) from None
        self._coders = [codec.coder(p.annotation) for p in self.params]
        self._classes = tuple(c.plain for c in self._coders)
        self._all_plain = all(c is not None for c in self._classes)
        self._floats = any(c.floats for c in self._coders)
        self._args_adapter: TypeAdapter[Any] = TypeAdapter(_tuple_of(resolved))
        self._input_adapter = TypeAdapter(
            typing_extensions.TypedDict(  # type: ignore[operator]
                f"{fn.__name__}_input", dict(zip(self._names, resolved, strict=True))
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

    def _refused(self, doing: str, values: tuple[Any, ...], error: Exception) -> Exception:
        """The error for arguments that did not encode, naming the argument at fault."""
        for name, value_coder, value in zip(self._names, self._coders, values, strict=True):
            try:
                value_coder.dump(value, depth=1)
            except codec.ENCODE_ERRORS as found:
                detail = f"argument {name!r} {codec.describe(found, value, name)}"
                break
        else:
            detail = codec.reason(error)
        return InvalidArgumentsError(
            f"cannot {doing} {self.what}: {detail}. Pass values of the annotated types, or "
            "annotate the parameters with storable types.",
            what=self.what,
        )

    def encode_args(self, values: tuple[Any, ...]) -> str:
        checked = self._all_plain
        if checked:  # a plain loop: a generator in all() costs more than the check (~0.7 µs)
            for value, cls in zip(values, self._classes, strict=True):
                if not isinstance(value, cls):  # type: ignore[arg-type]
                    checked = False
                    break
        try:
            return codec.dump_json(
                self._args_adapter, values, checked=checked, floats=self._floats
            ).decode()
        except codec.ENCODE_ERRORS as error:
            raise self._refused("record the arguments of", values, error) from None

    def decode_args(self, text: str, where: str = "") -> tuple[Any, ...]:
        """The recorded arguments; ``where`` (``"instance X, step Y"``) goes in an error."""
        try:
            return tuple(self._args_adapter.validator.validate_json(text))
        except (ValidationError, ValueError, KeyError, TypeError) as error:
            what = _at(f"the stored arguments of {self.what}", where)
            raise codec.load_failure(what, self._arg_types(), error) from None

    def validate_input(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """Coerce a workflow's arguments to their annotated types (dicts → models...)."""
        try:
            data = self._input_adapter.validate_python(dict(zip(self._names, values, strict=True)))
        except ValidationError as error:
            raise InvalidArgumentsError(
                f"wrong arguments for {self.what}:\n{error}", what=self.what
            ) from None
        return tuple(data[name] for name in self._names)

    def input_schema(self) -> dict[str, Any]:
        """The JSON schema of the workflow's input, an object keyed by parameter name (for
        clients that start it from JSON, as MCP tools do); defaulted parameters are optional."""
        schema: dict[str, Any] = self._input_adapter.json_schema()
        schema["required"] = [p.name for p in self.params if p.default is inspect.Parameter.empty]
        return schema

    def encode_input(self, values: tuple[Any, ...]) -> str:
        """A workflow's input as a JSON object keyed by parameter name (for find_instances)."""
        data = dict(zip(self._names, values, strict=True))
        try:
            return codec.dump_json(
                self._input_adapter, data, checked=False, floats=self._floats
            ).decode()
        except codec.ENCODE_ERRORS as error:
            raise self._refused("store the input of", values, error) from None

    def decode_input(self, text: str, where: str = "") -> tuple[Any, ...]:
        try:
            data = self._input_adapter.validator.validate_json(text)
        except (ValidationError, ValueError, KeyError, TypeError) as error:
            what = _at(f"the stored input of {self.what}", where)
            raise codec.load_failure(what, self._arg_types(), error) from None
        return tuple(data[name] for name in self._names)

    def encode_result(self, value: Any) -> str:
        return self._result.encode(value, f"the result of {self.what}")

    def decode_result(self, text: str | None, where: str = "") -> Any:
        if text is None:
            return None
        return self._result.load(text, _at(f"the stored result of {self.what}", where))

    def _arg_types(self) -> Any:
        return _tuple_of([p.annotation for p in self.params])


def _tuple_of(types: list[Any]) -> Any:
    """``tuple[types...]``: the arguments as they are recorded, one JSON array."""
    return tuple.__class_getitem__(tuple(types))


def _at(what: str, where: str) -> str:
    return f"{what} ({where})" if where else what
