"""Fixtures of the durable-AI tests: a stand-in OpenAI server on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ai.openai_server import OpenAIServer


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A started stand-in server (see tests/ai/openai_server.py), stopped after the test."""
    server = OpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
