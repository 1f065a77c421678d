"""Several processes opening one new database at once all succeed, and each migration is
applied exactly once (two kernels, or a kernel and ``romancy-nb worker``, starting together).

Real processes, released together at each round onto a file that does not exist yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from romancy_nb.store import migrate

PROCESSES = 8
ROUNDS = 4
OPENS = 3  # per process and round: the first one races to create the file

_OPENER = textwrap.dedent(
    """
    import json, sys, time
    import romancy_nb as rn
    from romancy_nb.store import InstanceRecord, open_store

    me = sys.argv[1]
    print("ready", flush=True)
    for line in sys.stdin:  # one database path per round, given to every process at once
        path = line.strip()
        applied, errors = [], []
        for n in range(int(sys.argv[2])):
            try:
                store = open_store(path)
                try:
                    applied.extend(store.migrate())
                    now = time.time()
                    store.create_instance(InstanceRecord(
                        f"{me}-{n}", "wf", "completed", "{}", None, None, None, None, None,
                        now, now))
                finally:
                    store.close()
            except rn.RomancyError as error:
                errors.append(f"{type(error).__name__}: {error}")
        print(json.dumps({"applied": applied, "errors": errors}), flush=True)
    """
)


def test_processes_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, f"p{i}", str(OPENS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    versions = [m.version for m in migrate.load("romancy_nb.store.sqlite.migrations")]
    try:
        for opener in openers:  # every process has imported everything: start together
            assert opener.stdout is not None and opener.stdout.readline().strip() == "ready"
        for round_no in range(ROUNDS):
            db = tmp_path / f"new-{round_no}.db"
            for opener in openers:
                assert opener.stdin is not None
                opener.stdin.write(f"{db}\n")
                opener.stdin.flush()
            reports = []
            for opener in openers:
                assert opener.stdout is not None
                line = opener.stdout.readline()
                assert line, opener.stderr.read() if opener.stderr else ""
                reports.append(json.loads(line))
            errors = [error for report in reports for error in report["errors"]]
            assert errors == [], f"round {round_no}: {len(errors)} failed opens: {errors[:3]}"
            applied = Counter(v for report in reports for v in report["applied"])
            assert applied == Counter(versions), f"round {round_no}: applied {applied}"
    finally:
        for opener in openers:
            if opener.stdin is not None:
                opener.stdin.close()
        for opener in openers:
            opener.wait(timeout=120)
    assert [opener.returncode for opener in openers] == [0] * PROCESSES
