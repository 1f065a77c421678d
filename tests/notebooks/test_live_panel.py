"""In a real kernel the panel updates itself while work runs, and the kernel stays free."""

from __future__ import annotations

from pathlib import Path

from tests.notebooks.kernels import Kernel

CELLS = [
    "%load_ext romancy_nb\nimport asyncio\nimport romancy_nb as rn",
    "%%activity\ndef slow_step(ctx, n: int) -> int:\n"
    "    import time\n    time.sleep(0.3)  # sync: runs in a worker thread\n    return n",
    "%%workflow\nasync def three_slow(ctx, n: int) -> int:\n"
    "    for i in range(3):\n        await slow_step(ctx, i)\n    return n",
    "p = rn.panel('three_slow')\np.fields['n'].value = 7\n"
    "p.instance_id.value = 'live-1'\np.start_button.click()",
]


def test_panel_updates_live_in_a_kernel(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path)
    try:
        for cell in CELLS:
            kernel.run(cell)
        # The kernel answers while the workflow runs its sync steps in threads.
        assert kernel.value("1 + 1") == "2"
        # No refresh() call: the panel's background task picks up every change.
        kernel.run(
            "async with asyncio.timeout(20):\n"
            "    while not (p.view and p.view.status == 'completed'):\n"
            "        await asyncio.sleep(0.05)"
        )
        assert kernel.value("len(p.view.timeline.steps)") == "3"
        assert kernel.value("p.instances.options[0]") == "('live-1 · completed', 'live-1')"
        assert kernel.value("p.view.cancel_button.disabled") == "True"
    finally:
        kernel.shutdown()
