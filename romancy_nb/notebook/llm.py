"""``rn.llm_calls()``: the model calls of the recorded history, one row each.

Every ``rn.ai.chat`` step records its request as input and its answer (usage, latency)
as output, so the view reads the history and needs nothing of its own in the store.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from romancy_nb.ai.chat import STEP_NAME
from romancy_nb.notebook.state import current_app
from romancy_nb.notebook.views import history

if TYPE_CHECKING:
    import pandas as pd

    from romancy_nb.engine import App, StepInfo

LLM_COLUMNS = [
    "instance_id",
    "step_id",
    "model",
    "tokens_in",
    "tokens_out",
    "latency",
    "cost",
    "prompt",
    "answer",
]
Prices = dict[str, tuple[float, float]]
"""``{model: (price per 1000 prompt tokens, price per 1000 answer tokens)}``."""


def _value(cell: Any) -> Any:
    return json.loads(cell) if isinstance(cell, str) else cell


def _prompt(messages: list[dict[str, Any]]) -> str:
    """The last message's text: what the model was asked this time."""
    content = messages[-1].get("content") if messages else None
    return content if isinstance(content, str) else json.dumps(content)


def _answer(answer: dict[str, Any]) -> Any:
    """The answer's text, or the tool calls it asked for instead."""
    content = answer.get("content")
    return content if content is not None else answer.get("tool_calls")


def call_outline(step: StepInfo) -> str | None:
    """``prompt → answer`` of a completed model call (the panel's timeline shows it);
    None for any other step."""
    if step.name != STEP_NAME or step.status != "completed" or not step.output:
        return None
    (request,) = step.input
    answer = _answer(step.output)
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return f"{_prompt(request.get('messages', []))} → {text}"


def llm_calls(app: App | None = None, prices: Prices | None = None) -> pd.DataFrame:
    """One row per completed model call: instance, step, model, tokens, latency (s), and
    the cost when ``prices`` names the model (NaN when it does not, or without prices)."""
    import pandas as pd

    steps = history(app=app or current_app())
    steps = steps[(steps["name"] == STEP_NAME) & (steps["status"] == "completed")]
    rows = []
    for step in steps.itertuples():
        (request,) = _value(step.input)  # the step's one argument: its ChatRequest
        answer = _value(step.output)
        usage = answer.get("usage", {})
        tokens_in = usage.get("prompt_tokens", 0)
        tokens_out = usage.get("completion_tokens", 0)
        price = (prices or {}).get(answer["model"]) or (prices or {}).get(request.get("model"))
        cost = (tokens_in * price[0] + tokens_out * price[1]) / 1000 if price else float("nan")
        rows.append(
            (
                step.instance_id,
                step.step_id,
                answer["model"],
                tokens_in,
                tokens_out,
                answer.get("latency"),
                cost,
                _prompt(request.get("messages", [])),
                answer.get("content")
                if answer.get("content") is not None
                else answer.get("tool_calls"),
            )
        )
    return pd.DataFrame(rows, columns=LLM_COLUMNS)
