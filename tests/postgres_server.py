"""A private, throwaway PostgreSQL server for the test session.

The suite's PostgreSQL runs talk to a real server, never a mock, and never to one the machine
happens to run: :func:`shared_server` initdb's a cluster into a temporary folder, starts it on
a free loopback port (its socket in that folder too, so nothing outside is touched) and stops
it and removes the folder when the session ends — from ``pytest_sessionfinish``, from
``atexit`` if the session is interrupted (Ctrl-C), and from a watchdog process if the session
dies without running either (SIGTERM from ``timeout``, SIGKILL): the server runs in a session
of its own (pg_ctl detaches it), so nothing else would ever stop it. Run as root (CI,
containers), the server runs as the ``postgres`` user, because PostgreSQL refuses root.

Durability settings are off (``fsync``, ``full_page_writes``): a crash of this server loses
nothing anyone needs, and the tests kill *workers*, not the server. ``restart()`` keeps the
data and the port, so tests can take the server away under running workers.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARY_ROOTS = (Path("/usr/lib/postgresql"),)
"""Where Debian and Ubuntu put each major version's ``bin/`` (``postgresql-NN`` packages)."""

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "300",  # multi-process tests: several workers, each with its pool
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",  # commits still wait for the WAL write: real round trips
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}
"""Appended to ``postgresql.conf``; the port and the socket folder are added per server."""

SERVICE_USER = "postgres"
"""Who runs the server when the tests run as root (initdb and postgres refuse root)."""


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server binaries: the PostgreSQL tests cannot run (they fail, not skip)."""


def find_binaries() -> Path:
    """The ``bin/`` folder of the newest PostgreSQL server installed.

    ``$ROMANCY_PG_BIN`` names one explicitly; otherwise the Debian layout, then ``initdb`` on
    the ``PATH`` (Homebrew, other distributions).
    """
    explicit = os.environ.get("ROMANCY_PG_BIN")
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    for root in BINARY_ROOTS:
        if root.is_dir():
            versions = [p for p in root.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
            versions.sort(key=lambda p: tuple(int(n) for n in p.name.split(".")), reverse=True)
            candidates.extend(p / "bin" for p in versions)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "/usr/lib/postgresql/*/bin and the PATH"
    raise PostgresMissingError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in "
        f"{looked}: install them (Debian: apt-get install postgresql; scripts/test.sh "
        "does it) or point $ROMANCY_PG_BIN at their folder"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """One private cluster: its folder, its port, and how to stop and start it again."""

    bin_dir: Path
    folder: Path
    port: int
    user: str | None
    """The account the server runs as (``None``: the current one)."""
    running: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def url(self) -> str:
        """The maintenance database ``postgres`` as superuser (trust auth on loopback)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{SERVICE_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A server tool, as the server's account, with its output kept for the error."""
        done = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
            **_as_account(self.user),
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}"
                f"{self._log_tail()}"
            )
        return done

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(lines) if lines else ""

    def init(self) -> None:
        """initdb with trust auth (the server only listens on loopback and its own socket)."""
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", SERVICE_USER, "-E", "UTF8",
            "--no-sync", "--locale=C",
        )  # fmt: skip
        settings = {**SETTINGS, "unix_socket_directories": f"'{self.folder}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/postgres_server.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        """Start (again) on the same port, and wait until it accepts connections."""
        with self._lock:
            if self.running:
                return
            self._run(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                "-o", f"-p {self.port}",
            )  # fmt: skip
            self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session (clients see their connections
        close), ``immediate`` is a crash of the server (recovery at the next start)."""
        with self._lock:
            if not self.running:
                return
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))
            self.running = False

    def restart(self, mode: str = "fast") -> None:
        """Take the server away from its clients and bring it back, data and port kept."""
        self.stop(mode)
        self.start()

    def watch(self) -> None:
        """Start the watchdog: a process in a session of its own that waits for this one to
        end (its stdin, our pipe, reaches EOF however we die), then stops the server and
        deletes the folder. After a clean :meth:`remove` it finds nothing left to do."""
        self._watchdog = subprocess.Popen(
            [sys.executable, __file__, str(self.bin_dir), str(self.folder), self.user or ""],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to our process group must not reach it
        )

    def remove(self) -> None:
        """Stop the server (if up) and delete its folder; safe to call twice."""
        try:
            if self.running and self.data.exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            watchdog, self._watchdog = self._watchdog, None
            if watchdog is not None and watchdog.stdin is not None:
                watchdog.stdin.close()  # its cue; it exits at once, there is nothing left
                watchdog.wait()


def _as_account(user: str | None) -> dict[str, Any]:
    """``subprocess`` options that run a server tool as ``user`` (None: as ourselves)."""
    if user is None:
        return {}
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise PostgresMissingError(
            f"running as root, the test server must run as the {user!r} user, which does "
            "not exist: install Debian's postgresql package (it creates it) or run as "
            "another user"
        ) from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _watchdog_main(bin_dir: str, folder: str, user: str) -> None:
    """The watchdog's body (see :meth:`PostgresServer.watch`)."""
    sys.stdin.buffer.read()  # EOF: the test session has ended, one way or another
    data = Path(folder) / "data"
    if data.exists():
        subprocess.run(
            [str(Path(bin_dir) / "pg_ctl"), "stop", "-w", "-m", "immediate", "-D", str(data)],
            cwd="/",
            capture_output=True,
            check=False,
            **_as_account(user or None),
        )
    shutil.rmtree(folder, ignore_errors=True)


def launch() -> PostgresServer:
    """A new private server, initialised and started; ``atexit`` removes it."""
    bin_dir = find_binaries()
    user = SERVICE_USER if os.geteuid() == 0 else None
    account = _as_account(user)
    folder = Path(tempfile.mkdtemp(prefix="romancy-pg-"))
    if account:
        os.chown(folder, account["user"], account["group"])
    server = PostgresServer(bin_dir, folder, _free_port(), user)
    server.watch()
    atexit.register(server.remove)
    try:
        server.init()
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


_shared: PostgresServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> PostgresServer:
    """The session's one server, launched on first use (a SQLite-only run never starts it)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = launch()
        return _shared


def shutdown_shared() -> None:
    """Remove the session's server, if one was launched (the session fixture's finalizer)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.remove()
            _shared = None


if __name__ == "__main__":  # the watchdog process
    _watchdog_main(*sys.argv[1:4])
