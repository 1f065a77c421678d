"""An app's workflows as MCP tools (``rn.ai.mcp_server(app)``, ``romancy-nb mcp``).

An MCP host (Claude Desktop, an IDE, an agent) lists the tools and calls them: one
``start_<workflow>`` tool per registered workflow, whose input schema is the workflow's
parameters (the same pydantic validation as ``app.start``), plus tools to follow an
instance (status, result with an optional wait), send it an event, list and cancel.
A durable workflow outlives the MCP call that started it: the host gets an instance id at
once and asks for the result when it wants it.

Built on the lowlevel ``Server`` of the official SDK (mcp 2.x), because the tools are the
registry's and only known when listed. Bad input (arguments that do not fit, an unknown
or malformed instance id) is a tool error (``isError``) that says why, and stores
nothing; an unknown tool name is a protocol error.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

import romancy_nb as rn
from romancy_nb.errors import RomancyError
from romancy_nb.store.protocol import FINAL_STATUSES

START_PREFIX = "start_"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class _Tool:
    spec: types.Tool
    handler: Handler


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_ID = {"type": "string", "description": "The instance id a start tool returned."}


def _info(info: rn.InstanceInfo) -> dict[str, Any]:
    return {
        "instance_id": info.instance_id,
        "workflow": info.workflow_name,
        "status": info.status,
        "input": info.input,
        "output": info.output,
        "error": info.error,
        "cancel_reason": info.cancel_reason,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
    }


class _WorkflowTools:
    """The tools of one app, rebuilt from its registry each time they are listed."""

    def __init__(self, app: rn.App) -> None:
        self.app = app
        self.fixed = {
            tool.spec.name: tool
            for tool in [
                _Tool(
                    types.Tool(
                        name="instance_status",
                        description="The current state of a workflow instance: status "
                        "(running, waiting, completed, failed, cancelled...), input, "
                        "output, error.",
                        input_schema=_object({"instance_id": _ID}, ["instance_id"]),
                        annotations=types.ToolAnnotations(read_only_hint=True),
                    ),
                    self.status,
                ),
                _Tool(
                    types.Tool(
                        name="instance_result",
                        description="The result of a workflow instance, waiting up to "
                        "`wait` seconds for it to end (0: answer at once). A status other "
                        "than completed means it has no result (yet).",
                        input_schema=_object(
                            {
                                "instance_id": _ID,
                                "wait": {"type": "number", "minimum": 0, "default": 0},
                            },
                            ["instance_id"],
                        ),
                        annotations=types.ToolAnnotations(read_only_hint=True),
                    ),
                    self.result,
                ),
                _Tool(
                    types.Tool(
                        name="send_event",
                        description="Send an event: the instances waiting for its type "
                        "(ctx.wait_event) receive it, and an event-handler workflow of "
                        "that name starts. A repeated id is delivered once.",
                        input_schema=_object(
                            {
                                "type": {"type": "string"},
                                "data": {"description": "The event's JSON data."},
                                "id": {"type": "string", "description": "Idempotency key."},
                                "source": {"type": "string", "default": "mcp"},
                                "subject": {"type": "string"},
                            },
                            ["type"],
                        ),
                    ),
                    self.send_event,
                ),
                _Tool(
                    types.Tool(
                        name="list_instances",
                        description="Workflow instances, newest first, one page at a time.",
                        input_schema=_object(
                            {
                                "workflow": {"type": "string"},
                                "status": {"type": "string"},
                                "limit": {"type": "integer", "minimum": 1, "default": 20},
                                "page_token": {"type": "string"},
                            },
                            [],
                        ),
                        annotations=types.ToolAnnotations(read_only_hint=True),
                    ),
                    self.list_instances,
                ),
                _Tool(
                    types.Tool(
                        name="cancel_instance",
                        description="Cancel a running or waiting instance; its "
                        "compensations run. Returns the status it ends in.",
                        input_schema=_object(
                            {"instance_id": _ID, "reason": {"type": "string"}}, ["instance_id"]
                        ),
                        annotations=types.ToolAnnotations(destructive_hint=True),
                    ),
                    self.cancel,
                ),
            ]
        }

    def tools(self) -> dict[str, _Tool]:
        found = dict(self.fixed)
        for wf in sorted(self.app.registry.workflows(), key=lambda wf: wf.name):
            name = START_PREFIX + _UNSAFE.sub("_", wf.name)
            if name in found:
                raise ValueError(
                    f"workflows {wf.name!r} and another both make the MCP tool {name!r}: "
                    "rename one (tool names keep only letters, digits, _ . and -)"
                )
            doc = inspect.getdoc(wf.fn)
            spec = types.Tool(
                name=name,
                description=f"Start workflow {wf.name!r} and return its instance id at once "
                "(it runs durably; ask instance_result for its result)."
                + (f"\n\n{doc}" if doc else ""),
                input_schema=wf.shape.input_schema(),
            )
            found[name] = _Tool(spec, self._starter(wf))
        return found

    def _starter(self, wf: rn.Workflow[Any, Any]) -> Handler:
        async def start(arguments: dict[str, Any]) -> dict[str, Any]:
            instance_id = await self.app.start(wf, **arguments)
            return {"instance_id": instance_id, "workflow": wf.name}

        return start

    async def status(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return _info(self.app.get_instance(arguments["instance_id"]))

    async def result(self, arguments: dict[str, Any]) -> dict[str, Any]:
        instance_id = arguments["instance_id"]
        wait = float(arguments.get("wait") or 0)
        if wait < 0:
            raise ValueError("wait must be 0 or more seconds")
        info = self.app.get_instance(instance_id)  # an unknown id is an error before a wait
        if wait and info.status not in FINAL_STATUSES:
            # Ended or not (a TimeoutError), failed (the workflow's own error, any type):
            # the record read next says which.
            with contextlib.suppress(Exception):
                await self.app.result(instance_id, timeout=wait)
            info = self.app.get_instance(instance_id)
        answer = _info(info)
        del answer["input"]
        return answer

    async def send_event(self, arguments: dict[str, Any]) -> dict[str, Any]:
        prepared = self.app.prepare_event(
            arguments["type"],
            arguments.get("data"),
            source=arguments.get("source") or "mcp",
            id=arguments.get("id"),
            subject=arguments.get("subject"),
        )
        receipt = await self.app.deliver_event(prepared)
        return {
            "type": receipt.type,
            "id": receipt.id,
            "instance_id": receipt.instance_id,
            "duplicate": receipt.duplicate,
        }

    async def list_instances(self, arguments: dict[str, Any]) -> dict[str, Any]:
        page = self.app.list_instances(
            workflow=arguments.get("workflow"),
            status=arguments.get("status"),
            limit=int(arguments.get("limit") or 20),
            page_token=arguments.get("page_token"),
        )
        return {
            "instances": [
                {
                    "instance_id": info.instance_id,
                    "workflow": info.workflow_name,
                    "status": info.status,
                    "updated_at": info.updated_at.isoformat(),
                }
                for info in page.instances
            ],
            "next_page_token": page.next_page_token,
        }

    async def cancel(self, arguments: dict[str, Any]) -> dict[str, Any]:
        instance_id = arguments["instance_id"]
        status = await self.app.cancel(instance_id, arguments.get("reason") or "cancelled via MCP")
        return {"instance_id": instance_id, "status": status}


def _answer(data: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(data, default=_jsonable)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=json.loads(text)
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _refused(error: Exception) -> types.CallToolResult:
    """A tool error the host (and its model) reads: the romancy_nb error's own message."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{type(error).__name__}: {error}")],
        is_error=True,
    )


def mcp_server(app: rn.App, *, name: str = "romancy-nb") -> Server[Any]:
    """An MCP server (the SDK's lowlevel ``Server``) whose tools start and follow ``app``'s
    workflows. The caller opens ``app`` and runs the server on a transport: stdio
    (``server.run`` over ``mcp.server.stdio.stdio_server()``) or streamable HTTP
    (``server.streamable_http_app()``, an ASGI app); ``romancy-nb mcp`` does both."""
    tools = _WorkflowTools(app)
    tools.tools()  # two workflows that make one tool name: an error here, at the call

    def listed() -> dict[str, _Tool]:
        """The tools now: workflows registered since the server was made are listed too."""
        try:
            return tools.tools()
        except ValueError as error:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(error)) from None

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool.spec for tool in listed().values()])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = listed().get(params.name)
        if tool is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool {params.name!r}")
        arguments = dict(params.arguments or {})
        if params.name in tools.fixed:  # a start tool's arguments are checked by app.start
            for required in tool.spec.input_schema["required"]:
                if required not in arguments:
                    return _refused(ValueError(f"{params.name} needs the argument {required!r}"))
        try:
            return _answer(await tool.handler(arguments))
        except (RomancyError, ValueError) as error:
            return _refused(error)

    return Server(
        name,
        instructions="Durable romancy_nb workflows: start_* tools start one and return its "
        "instance id; instance_result (with wait) gives its result.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


__all__ = ["mcp_server"]
