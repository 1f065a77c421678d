"""The kernelspec in jupyter-config/ starts a kernel with the extension already loaded."""

from __future__ import annotations

import json
from pathlib import Path

from tests.notebooks.kernels import KERNELS, Kernel


def test_kernelspec_is_valid_json() -> None:
    spec = json.loads((KERNELS / "romancy-nb" / "kernel.json").read_text())
    assert spec["language"] == "python"
    assert "--IPKernelApp.extra_extensions=romancy_nb" in spec["argv"]


def test_kernel_preloads_the_extension(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path, kernel_name="romancy-nb")
    try:
        assert kernel.value("'romancy' in get_ipython().magics_manager.magics['line']") == "True"
        # The extension opens the app on the kernel's loop in the background (migrations run
        # off the loop): it is open a few loop turns later, without any cell awaiting it.
        kernel.run(
            "import asyncio\nimport romancy_nb as rn\n"
            "for _ in range(500):\n"
            "    if rn.current_app().is_open:\n"
            "        break\n"
            "    await asyncio.sleep(0.01)"
        )
        assert kernel.value("rn.current_app().is_open") == "True"
        kernel.run("%%workflow\nasync def hello(ctx, name: str) -> str:\n    return 'hi ' + name")
        assert (
            kernel.value(
                "await rn.current_app().result(await rn.current_app().start(hello, 'ann'))"
            )
            == "'hi ann'"
        )
        assert kernel.value("rn.current_app().url") == repr(str(tmp_path / "romancy.db"))
    finally:
        kernel.shutdown()
