"""Method declarations: typed parameters and results for every API method.

A service class marks its public methods with :func:`api_method`. The registry
reads each signature once, builds a pydantic model of the parameters (in
order, so positional and named params both work) and a type adapter for the
result; the same objects check input, shape output and produce the OpenRPC
document served by ``rpc.discover``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_jsonable_python

from certd.errors import FieldError, ValidationError


@dataclass(frozen=True)
class MethodOptions:
    job: bool = False
    readonly: bool = False
    anonymous: bool = False
    name: str | None = None
    # Parameter names whose values are never stored in job records or logs.
    secret_params: tuple[str, ...] = ()
    # A method of the same service, called with the checked parameters before
    # a job starts, so that bad input is refused at once and not as a failed job.
    check: str | None = None
    # Changes nothing but hands out private keys: still not for read-only keys.
    reveals_keys: bool = False
    # The result (a job method's: its job's result) as read-only callers get
    # it, for a result that holds what only full callers may see.
    readonly_view: Callable[[Any], Any] | None = None

    def read_only_refusal(self, method: str) -> str:
        """Why a read-only API key may not call ``method``."""
        if self.reveals_keys:
            return f"{method} hands out private keys; this API key is read-only"
        return f"{method} changes state and this API key is read-only"


def api_method(
    *,
    job: bool = False,
    readonly: bool = False,
    anonymous: bool = False,
    name: str | None = None,
    secret_params: tuple[str, ...] = (),
    check: str | None = None,
    reveals_keys: bool = False,
    readonly_view: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Expose a service method over the API.

    ``readonly`` methods may be called with a read-only API key; ``job``
    methods get a :class:`certd.api.jobs.Job` as their first argument and
    return a job id to the caller at once. ``readonly_view`` shapes the
    result (for a job method, the job's result) for read-only callers.
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__certd_api__ = MethodOptions(  # type: ignore[attr-defined]
            job,
            readonly,
            anonymous,
            name,
            secret_params,
            check,
            reveals_keys,
            readonly_view,
        )
        return fn

    return mark


class Service:
    """Base of every namespace; subclasses set ``namespace``."""

    namespace: ClassVar[str]

    def __init__(self, app: Any) -> None:
        self.app = app


@dataclass
class MethodSpec:
    """One callable method with its checked signature."""

    name: str
    func: Callable[..., Awaitable[Any]]
    options: MethodOptions
    param_names: list[str]
    params_model: type[BaseModel]
    result_adapter: TypeAdapter[Any]
    summary: str
    required: int = 0
    param_annotations: dict[str, Any] = field(default_factory=dict)

    def bind(self, params: list[Any] | dict[str, Any] | None) -> dict[str, Any]:
        """Check positional or named params; return them as validated keyword args.

        Raises:
            ValidationError: each error names the offending field path.
        """
        if params is None:
            params = []
        if isinstance(params, list):
            if len(params) > len(self.param_names):
                raise ValidationError.single(
                    "params",
                    f"{self.name} takes at most {len(self.param_names)} parameters, "
                    f"got {len(params)}",
                )
            named = dict(zip(self.param_names, params, strict=False))
        else:
            named = params
        try:
            model = self.params_model.model_validate(named)
        except PydanticValidationError as exc:
            raise validation_error_from_pydantic(exc) from None
        return {name: getattr(model, name) for name in self.param_names}

    def dump_result(self, value: Any) -> Any:
        # The adapter describes the result; plain conversion is enough to send it
        # and avoids re-validating every entry of a large query.
        return to_jsonable_python(value)


def validation_error_from_pydantic(
    exc: PydanticValidationError, prefix: str = ""
) -> ValidationError:
    """Translate pydantic's errors into certd's, one field path per error."""
    errors = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in err["loc"] if part != "__root__")
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "this field is required"
        # Values can hold secrets, so only pydantic's message is kept, never the input.
        errors.append(FieldError(path or "params", message))
    return ValidationError(errors)


class Registry:
    """Every method of every service, by its dotted name."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodSpec] = {}

    def add_service(self, service: Service) -> None:
        for attr in dir(type(service)):
            fn = getattr(type(service), attr)
            options: MethodOptions | None = getattr(fn, "__certd_api__", None)
            if options is None:
                continue
            name = options.name or f"{service.namespace}.{attr}"
            self.methods[name] = self._spec(name, getattr(service, attr), fn, options)

    def _spec(
        self,
        name: str,
        bound: Callable[..., Awaitable[Any]],
        fn: Callable[..., Any],
        options: MethodOptions,
    ) -> MethodSpec:
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())[1:]  # self
        if options.job:
            params = params[1:]  # the Job handle is supplied by the dispatcher
        fields: dict[str, Any] = {}
        required = 0
        for param in params:
            annotation = hints.get(param.name, Any)
            if param.default is inspect.Parameter.empty:
                fields[param.name] = (annotation, ...)
                required += 1
            else:
                fields[param.name] = (annotation, param.default)
        model = create_model(  # type: ignore[call-overload]
            f"{name.replace('.', '_')}_params",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            **fields,
        )
        result_type = int if options.job else hints.get("return", Any)
        doc = inspect.getdoc(fn) or ""
        return MethodSpec(
            name=name,
            func=bound,
            options=options,
            param_names=[p.name for p in params],
            params_model=model,
            result_adapter=TypeAdapter(result_type),
            summary=doc.splitlines()[0] if doc else "",
            required=required,
            param_annotations={p.name: hints.get(p.name, Any) for p in params},
        )

    def readonly_result(self, method: str, result: Any) -> Any:
        """``method``'s result (a job's, for a job method) as read-only callers see it."""
        spec = self.methods.get(method)
        view = spec.options.readonly_view if spec is not None else None
        return result if view is None or result is None else view(result)

    def openrpc(self, version: str) -> dict[str, Any]:
        """An OpenRPC 1.2 document describing every method."""
        methods = []
        for name in sorted(self.methods):
            spec = self.methods[name]
            schema = spec.params_model.model_json_schema()
            defs = schema.get("$defs", {})
            params = []
            for pname in spec.param_names:
                pschema = dict(schema["properties"][pname])
                if defs:
                    pschema["$defs"] = defs
                params.append(
                    {
                        "name": pname,
                        "required": pname in schema.get("required", []),
                        "schema": pschema,
                    }
                )
            try:
                result_schema = spec.result_adapter.json_schema()
            except Exception:
                result_schema = {}
            methods.append(
                {
                    "name": name,
                    "summary": spec.summary,
                    "paramStructure": "either",
                    "params": params,
                    "result": {
                        "name": "job_id" if spec.options.job else "result",
                        "schema": result_schema,
                    },
                    "x-job": spec.options.job,
                    "x-readonly": spec.options.readonly,
                    "x-anonymous": spec.options.anonymous,
                }
            )
        return {
            "openrpc": "1.2.6",
            "info": {"title": "certd", "version": version},
            "methods": methods,
        }
