"""A throwaway PostgreSQL server for tests and measurements, from the distribution's binaries
(`initdb`, `pg_ctl`; Debian's `postgresql` package puts them in /usr/lib/postgresql/N/bin).

It listens on a unix socket in its own temporary folder (no TCP port), keeps nothing on
disk durable (fsync off), and runs as an unprivileged user when started by root, since the
server refuses to run as root. `python tests/pg.py` starts one and prints its URL.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

PORT = 5432  # the socket lives in a private folder: the port only names the socket file


def server_binaries() -> Path | None:
    """The newest installed server's bin folder, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob(
        "/usr/pgsql-*/bin/initdb")
    if (on_path := shutil.which("initdb")) is not None:
        found.append(on_path)
    found = [f for f in found if os.access(Path(f).with_name("pg_ctl"), os.X_OK)]
    if not found:
        return None

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    return Path(max(found, key=version)).parent


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix that drops root, and the uid/gid that will own the files."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user.pw_uid, user.pw_gid
        if shutil.which("setpriv"):
            return (["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                     "--clear-groups"], user.pw_uid, user.pw_gid)
    raise RuntimeError("running as root with no unprivileged user (postgres, nobody) or no "
                       "runuser/setpriv to start PostgreSQL as")


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.folder: Path | None = None

    def _cmd(self, prefix: list[str], *args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = (self.folder / "server.log") if self.folder else None
            tail = log.read_text()[-2000:] if log and log.is_file() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr[-2000:]}\n{tail}")

    def start(self) -> PostgresServer:
        prefix, uid, gid = _run_as()
        self.folder = Path(tempfile.mkdtemp(prefix="autolab-pg-"))
        if uid is not None:
            os.chown(self.folder, uid, gid)
        data = self.folder / "data"
        self._cmd(prefix, str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-k {self.folder} -p {PORT} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._cmd(prefix, str(self.bindir / "pg_ctl"), "-D", str(data), "-l",
                  str(self.folder / "server.log"), "-w", "-t", "60", "-o", options, "start")
        self._prefix = prefix
        atexit.register(self.stop)
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.folder}&port={PORT}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; its URL."""
        import sqlalchemy as sa

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        if self.folder is None:
            return
        folder, self.folder = self.folder, None
        subprocess.run([*self._prefix, str(self.bindir / "pg_ctl"), "-D", str(folder / "data"),
                        "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    import signal
    import sys

    bindir = server_binaries()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (apt-get install postgresql)")
    server = PostgresServer(bindir).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(server.create_database("autolab"), flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
