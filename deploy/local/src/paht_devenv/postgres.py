"""A PostgreSQL server of its own: initdb once in a data dir, pg_ctl start/stop on a port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from paht_devenv.procs import StartupError, port_open, wait_until


def find_pg_bindir() -> Path:
    """Directory holding initdb and pg_ctl (PAHT_PG_BINDIR, then PATH, then Debian's layout)."""
    configured = os.environ.get("PAHT_PG_BINDIR")
    if configured:
        return Path(configured)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if Path(directory, "initdb").exists():
            return Path(directory)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise StartupError(
        "PostgreSQL binaries not found: install the Debian package postgresql "
        "(apt-get install postgresql) or set PAHT_PG_BINDIR"
    )


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root; the Debian package creates the postgres account.
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StartupError("running as root but no 'postgres' user exists") from exc
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    """One server; ``dsn`` is the superuser DSN for the ``postgres`` database."""

    data_dir: Path
    port: int
    log_file: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        bindir = find_pg_bindir()
        cmd = [*_as_postgres_user(), str(bindir / argv[0]), *argv[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603

    def _prepare_dirs(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            for path in (self.data_dir, self.log_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            # the server must be able to reach its data dir through every parent
            parent = self.data_dir.parent
            while parent != parent.parent:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
                parent = parent.parent
            os.chmod(self.data_dir, 0o700)

    def initialised(self) -> bool:
        """True when the data dir already holds a cluster."""
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        """True when pg_ctl reports the server running."""
        return self._run("pg_ctl", "status", "-D", str(self.data_dir)).returncode == 0

    def start(self, *, timeout: float = 60.0) -> None:
        """initdb on first use, then start and wait until it accepts connections."""
        self._prepare_dirs()
        if not self.initialised():
            print(f"[postgres] initdb {self.data_dir}", flush=True)  # noqa: T201
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
            if result.returncode != 0:
                raise StartupError(f"initdb failed: {result.stderr or result.stdout}")
        if self.running():
            return
        if port_open(self.port):
            raise StartupError(f"port {self.port} is already taken; set PAHT_PG_PORT")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir} "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on "
            "-c synchronous_commit=on"
        )
        print(f"[postgres] starting on 127.0.0.1:{self.port}", flush=True)  # noqa: T201
        result = self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
        )
        if result.returncode != 0:
            raise StartupError(
                f"PostgreSQL failed to start: {result.stderr or result.stdout}; see {self.log_file}"
            )
        wait_until(
            lambda: port_open(self.port), timeout=timeout, what="PostgreSQL", log=self.log_file
        )

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server if it runs."""
        if self.initialised() and self.running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w")
