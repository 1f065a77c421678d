"""Retries: a flaky activity succeeds on its third attempt; a broken one runs out of them.

Attempts are recorded in the database, so a crash in the middle of a retry sequence resumes
with the next attempt. ``RetryExhaustedError.attempts`` lists every attempt's error; a
``TerminalError`` is never retried.

    python examples/retry.py [--db PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import romancy_nb as rn

ATTEMPTS: dict[str, int] = {}


@rn.activity(retry=rn.RetryPolicy(max_attempts=5, initial_interval=0.05, multiplier=2))
def flaky_fetch(ctx: rn.ActivityContext, url: str) -> str:
    ATTEMPTS[url] = ctx.attempt
    if ctx.attempt < 3:
        raise ConnectionError(f"{url} timed out (attempt {ctx.attempt})")
    return f"<html from {url}>"


@rn.activity(retry=rn.RetryPolicy.fixed(3, 0.05))
def broken_fetch(ctx: rn.ActivityContext, url: str) -> str:
    raise ConnectionError(f"{url} refused the connection")


@rn.activity
def validate(ctx: rn.ActivityContext, page: str) -> str:
    if "html" not in page:
        raise rn.TerminalError("not a page: retrying would not help")
    return "valid"


@rn.workflow
async def crawl(ctx: rn.WorkflowContext, url: str) -> dict:
    page = await flaky_fetch(ctx, url)
    verdict = await validate(ctx, page)
    try:
        await broken_fetch(ctx, url + "/mirror")
    except rn.RetryExhaustedError as error:
        mirror = [f"attempt {a.attempt}: {a.message}" for a in error.attempts]
    return {"page": page, "verdict": verdict, "mirror": mirror}


def main(db: Path) -> None:
    result = rn.App(db).run(crawl, "example.org")
    print(f"page after {ATTEMPTS['example.org']} attempts: {result['page']} ({result['verdict']})")
    print("mirror gave up:")
    for line in result["mirror"]:
        print(f"  {line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path(tempfile.mkdtemp()) / "retry.db")
    main(parser.parse_args().db)
