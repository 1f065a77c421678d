"""A small MCP server over stdio (the official SDK's MCPServer) for the agent tests.

Run as ``python mcp_tools.py LOG``.

Its one tool, ``distance``, appends a line to the file LOG at every call, so a test can
count the calls that reached the server.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("geo")
LOG = Path(sys.argv[1])


@server.tool()
def distance(a: str, b: str) -> int:
    """Kilometres from ``a`` to ``b`` (made up: 10 per letter)."""
    with LOG.open("a") as log:
        log.write(f"{a}-{b}\n")
    return 10 * (len(a) + len(b))


if __name__ == "__main__":
    server.run("stdio")
