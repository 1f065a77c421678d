"""A real browser: JupyterLab on a free loopback port, Debian's Chromium driven by Playwright.

Open a notebook, run its cells, click Start in the workflow panel, then Approve, and check
the instance completed in the store; then click "rewind to here" on its first step and check
the store holds the rewound run archived and the instance completed again. The screenshot
(the panel with its time-travel buttons; docs/notebook-panel.png is a copy) is kept as an
artifact: in ``$ROMANCY_ARTIFACTS`` if set, else in the test's ``tmp_path``.

The browser is a Chromium found on the machine (see :func:`chromium`): Debian's
``/usr/bin/chromium`` (``scripts/test.sh`` installs the package where apt-get can), one on
the PATH or in /Applications, Playwright's own (``python -m playwright install chromium``),
or ``$ROMANCY_CHROMIUM``. Without any, the test is skipped with the reason and the ways to
get one — unless ``$ROMANCY_REQUIRE_BROWSER`` is set (CI), where it fails instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.notebooks.kernels import eventually, query

CHROMIUM_COMMANDS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_APPS = (
    Path("/Applications/Chromium.app/Contents/MacOS/Chromium"),
    Path("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"),
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CELLS = [
    "%load_ext romancy_nb\nimport romancy_nb as rn",
    "%%activity\ndef announce(ctx, verdict: str) -> str:\n    return verdict + '!'",
    "%%workflow\nasync def approve_me(ctx, item: str = 'deploy') -> str:\n"
    "    event = await ctx.wait_event('approval')\n"
    "    return await announce(ctx, item + (' approved' if event.data['approved'] else "
    "' rejected'))",
    "rn.panel('approve_me')",
]


@pytest.fixture
def chromium() -> Path:
    """A Chromium to drive; asked for before ``lab``, so a skip starts no JupyterLab."""
    from playwright.sync_api import sync_playwright

    given = os.environ.get("ROMANCY_CHROMIUM")
    if given:
        assert Path(given).is_file(), f"ROMANCY_CHROMIUM={given} is not a file"
        return Path(given)
    with sync_playwright() as playwright:
        managed = Path(playwright.chromium.executable_path)
    found = [Path("/usr/bin/chromium")]
    found += [Path(path) for name in CHROMIUM_COMMANDS if (path := shutil.which(name))]
    found += [*CHROMIUM_APPS, managed]
    for path in found:
        if path.is_file():
            return path
    reason = (
        "no Chromium on this machine (looked at "
        + ", ".join(str(path) for path in found)
        + "): install one (Debian/Ubuntu: apt-get install chromium; macOS: brew install "
        "--cask chromium; anywhere: python -m playwright install chromium) or set "
        "ROMANCY_CHROMIUM=/path/to/chromium"
    )
    if os.environ.get("ROMANCY_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """JupyterLab serving ``tmp_path/work``; yields (base URL with token, work folder)."""
    work = tmp_path / "work"
    work.mkdir()
    notebook = new_notebook(cells=[new_code_cell(source) for source in CELLS])
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, work / "approval.ipynb")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
    )
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.allow_root=True",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError("JupyterLab exited:\n" + (tmp_path / "lab.log").read_text())
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
        except OSError:
            return False
        return True

    try:
        eventually(up, timeout=120, what="JupyterLab to answer")
        yield f"{base}/lab/tree/approval.ipynb?token={token}&reset", work
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def run_all_cells(page: Any) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def test_click_start_and_approve_in_jupyterlab(
    chromium: Path, lab: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url, work = lab
    artifacts = Path(os.environ.get("ROMANCY_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1480, "height": 860})
        page.set_default_timeout(120_000)
        try:
            page.goto(url)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            # The kernel is up once the status bar says so; then run all cells from the menu.
            page.locator("#jp-main-statusbar", has_text="Idle").wait_for()
            start = page.locator("button.widget-button", has_text="Start")
            run_all_cells(page)
            try:
                start.wait_for(timeout=60_000)
            except PlaywrightTimeout:  # a busy machine lost the menu click: once more
                run_all_cells(page)
            start.click()
            approve = page.locator("button.widget-button", has_text="Approve")
            approve.click()  # waits until the panel shows the awaited event
            db = work / "romancy.db"
            eventually(
                lambda: query(db, "SELECT status FROM workflow_instances") == [("completed",)],
                timeout=60,
                what="the instance to complete",
            )
            page.locator(".romancy-status", has_text="completed").wait_for()
            # The step rows arrive as messages (only the new ones), the wait with its time.
            row = page.locator(".romancy-step", has_text="wait_event:1")
            row.locator(".romancy-wait", has_text="waited").wait_for()
            page.locator(".romancy-step", has_text="announce:1").wait_for()
            # Time travel: rewind to the first step; the step after it runs again.
            row.locator("button.romancy-step-action", has_text="rewind to here").click()
            eventually(
                lambda: (
                    query(db, "SELECT status, cut_after, steps FROM workflow_runs_archive")
                    == [("rewound", "wait_event:1", 1)]
                ),
                timeout=60,
                what="the rewound run to be archived",
            )
            eventually(
                lambda: query(db, "SELECT status FROM workflow_instances") == [("completed",)],
                timeout=60,
                what="the rewound instance to complete again",
            )
            page.locator(".widget-html", has_text="rewound to wait_event:1").wait_for()
            page.locator(".romancy-status", has_text="completed").wait_for()
            start.scroll_into_view_if_needed()
            page.locator(".romancy-timeline").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts / "notebook-panel.png"))
        except Exception:
            page.screenshot(path=str(artifacts / "notebook-panel-failed.png"))
            raise
        finally:
            browser.close()
    assert query(db, "SELECT output FROM workflow_instances") == [('"deploy approved!"',)]
    history = query(db, "SELECT step_id, status FROM workflow_history ORDER BY seq")
    assert history == [("wait_event:1", "completed"), ("announce:1", "completed")]
