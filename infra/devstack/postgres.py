"""The embedded PostgreSQL: a private cluster under stack_dir()/postgres, run with Debian's binaries.

Layout: ``postgres/data`` (PGDATA, kept between runs: initdb happens only the first time) and
``postgres/run`` (the unix socket). The server listens on 127.0.0.1 only, with trust authentication,
so it is a single-machine development and demo database; production points DATABASE_URL elsewhere.

PostgreSQL refuses to run as root: as root, initdb and pg_ctl run as the ``postgres`` OS user (setpriv),
the cluster folders are owned by it, and every folder above them must be enterable by it.
fsync stays on (the demo cluster keeps its data); ``fast_fsync_off`` is for throwaway test clusters.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from infra.foundation.errors import RollcallError
from infra.foundation.paths import home
from infra.foundation.embedded import DB_NAME, DB_USER, HOST, database_url  # noqa: F401
from infra.foundation.paths import stack_dir

SUPERUSER = "postgres"  # the cluster's bootstrap superuser, whoever runs it
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_TOOLS = ("postgres", "initdb", "pg_ctl", "pg_isready", "psql")
OS_USER = "postgres"  # the OS account the server runs as when we are root
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; PostgreSQL appends "/.s.PGSQL.NNNNN"


def _version_of(bindir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in bindir.parent.name.split("."))
    except ValueError:
        return (0,)


def find_bindir(want_major: str | None = None) -> Path:
    """The folder with postgres, initdb, pg_ctl, pg_isready and psql: Debian's newest, else PATH.

    ``want_major`` (a data folder's PG_VERSION) picks that major version: a cluster cannot be run by
    another major version's server.
    """
    candidates = sorted(
        (d / "bin" for d in DEBIAN_ROOT.glob("*") if all((d / "bin" / t).is_file() for t in SERVER_TOOLS)),
        key=_version_of, reverse=True,
    ) if DEBIAN_ROOT.is_dir() else []
    on_path = shutil.which("pg_ctl")
    if on_path:
        path_bin = Path(on_path).resolve().parent
        if all((path_bin / t).is_file() for t in SERVER_TOOLS) and path_bin not in candidates:
            candidates.append(path_bin)
    if want_major:
        for bindir in candidates:
            if _server_major(bindir) == want_major:
                return bindir
        raise RollcallError(
            f"the embedded PostgreSQL cluster was made by PostgreSQL {want_major}, whose server binaries are not "
            f"installed: install the Debian package postgresql-{want_major}, or remove {_cluster_hint()} to start afresh"
        )
    if not candidates:
        raise RollcallError(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH): install the "
            "Debian package postgresql-15 (apt-get install postgresql-15, or postgresql), or set DATABASE_URL "
            "to a server you already have"
        )
    return candidates[0]


def _server_major(bindir: Path) -> str | None:
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return match.group(1) if match else None


def _cluster_hint() -> str:
    return str(stack_dir() / "postgres")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env.pop("LANG", None)
    return env


class Cluster:
    """One private cluster in ``root`` (``root/data`` is PGDATA, ``root/run`` holds the socket)."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.run_dir = root / "run"
        self.as_root = os.geteuid() == 0
        self._bindir: Path | None = None

    # -- binaries and users -------------------------------------------------------------------------
    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            version_file = self.data / "PG_VERSION"
            major = version_file.read_text().strip() if version_file.is_file() else None
            self._bindir = find_bindir(major)
        return self._bindir

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def _owner(self) -> pwd.struct_passwd | None:
        if not self.as_root:
            return None
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            raise RollcallError(
                "PostgreSQL refuses to run as root and there is no 'postgres' OS user: install the Debian "
                "postgresql-15 package (it creates the user), or run Rollcall as a normal user"
            ) from None

    def _as_owner(self, argv: list[str]) -> list[str]:
        if not self.as_root:
            return argv
        self._owner()
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups", "--", *argv]
        return ["runuser", "-u", OS_USER, "--", *argv]

    def _run_as_owner(self, argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self._as_owner(argv), capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, env=_clean_env(), **kwargs)

    # -- folders --------------------------------------------------------------------------------------
    def prepare_dirs(self, log: Path) -> None:
        """Create root/, run/ and the log file, owned by the server's OS user; check it can reach them."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch(exist_ok=True)
        owner = self._owner()
        if owner is None:
            return
        for path in (self.root, self.run_dir, log):
            st = path.stat()
            if st.st_uid != owner.pw_uid:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o755)
        self.run_dir.chmod(0o750)
        self._make_reachable(owner, [self.root.parent, log.parent])

    def _make_reachable(self, owner: pwd.struct_passwd, folders: list[Path]) -> None:
        """Every folder above the cluster must be enterable by the server's OS user.

        Missing search permission (o+x: enter, not list) is added inside Rollcall's own folders (home(),
        the stack folder) and below the system temp folder (pytest's 0700 /tmp/pytest-of-root, mkdtemp);
        anywhere else (a home folder such as /root) a RollcallError says what to run.
        """
        groups = set(os.getgrouplist(owner.pw_name, owner.pw_gid))
        ours = [home(), self.root.parent]
        temp = Path(tempfile.gettempdir()).resolve()
        blocked: list[Path] = []
        for folder in folders:
            for path in [folder, *folder.parents]:
                st = path.stat()
                if st.st_uid == owner.pw_uid:
                    ok = st.st_mode & stat.S_IXUSR
                elif st.st_gid in groups:
                    ok = st.st_mode & stat.S_IXGRP
                else:
                    ok = st.st_mode & stat.S_IXOTH
                if ok:
                    continue
                if any(path == p or p in path.parents for p in ours) or temp in path.parents:
                    path.chmod(st.st_mode | stat.S_IXOTH)
                elif path not in blocked:
                    blocked.append(path)
        if blocked:
            listed = " ".join(str(p) for p in sorted(blocked))
            raise RollcallError(
                f"PostgreSQL runs as the '{OS_USER}' OS user, which cannot enter {listed}: run "
                f"'chmod o+x {listed}' or set ROLLCALL_HOME (or ROLLCALL_STACK_DIR) to a folder it can reach "
                "(for example under /var/tmp)"
            )

    # -- lifecycle ------------------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def ensure_initialized(self, log: Path, fast: bool = False) -> bool:
        """initdb the first time (True when it ran); the data are kept afterwards."""
        self.prepare_dirs(log)
        if self.initialized():
            return False
        if self.data.exists():
            if any(self.data.iterdir()):
                raise RollcallError(
                    f"{self.data} exists but holds no PostgreSQL cluster (no PG_VERSION): move it away and run again"
                )
            self.data.rmdir()
        argv = [self.tool("initdb"), "-D", str(self.data), f"--username={SUPERUSER}", "--auth=trust",
                "--encoding=UTF8", "--no-locale"]
        if fast:
            argv.append("--no-sync")
        result = self._run_as_owner(argv, timeout=300)
        with log.open("a") as handle:
            handle.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RollcallError(
                f"initdb failed for the embedded PostgreSQL in {self.data} ({_last_line(result.stderr)}); "
                f"see {log}"
            )
        (self.data / "pg_hba.conf").write_text(
            "# Rollcall embedded cluster: loopback only, trust (a single-machine demo database)\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n"
        )
        return True

    def server_options(self, port: int, fast: bool) -> str:
        socket_dir = str(self.run_dir) if len(str(self.run_dir)) <= MAX_SOCKET_PATH else ""
        opts = ["-p", str(port), "-k", socket_dir, "-c", f"listen_addresses={HOST}"]
        if fast:
            opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return shlex.join(opts)

    def start(self, port: int, log: Path, fast: bool = False, timeout: float = 60) -> int:
        """Start the server detached (pg_ctl -w, new session); returns the postmaster's PID."""
        argv = [self.tool("pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", str(int(timeout)),
                "-o", self.server_options(port, fast), "start"]
        try:
            result = self._run_as_owner(argv, timeout=timeout + 10, start_new_session=True,
                                        stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RollcallError(
                f"PostgreSQL did not become ready on {HOST}:{port} within {timeout:.0f} s; see its log {log}"
            ) from None
        pid = self.postmaster_pid()
        if result.returncode != 0 or pid is None:
            reason = _last_line(_tail(log)) or _last_line(result.stderr + result.stdout)
            raise RollcallError(f"PostgreSQL did not start on {HOST}:{port} ({reason}); see its log {log}")
        return pid

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0].strip()
            return int(first)
        except (OSError, ValueError):
            return None

    def remove_stale_locks(self, alive) -> None:
        """Delete postmaster.pid and socket lock files naming a dead PID (``alive(pid)`` says).

        After a crash PostgreSQL removes them itself, except when the dead postmaster is a zombie not yet
        reaped (PID 1 here reaps late): kill(pid, 0) succeeds and it refuses to start.
        """
        for lock in [self.data / "postmaster.pid", *self.run_dir.glob(".s.PGSQL.*.lock")]:
            try:
                pid = int(lock.read_text().split("\n", 1)[0].strip())
            except (OSError, ValueError):
                continue
            if not alive(pid):
                lock.unlink(missing_ok=True)
                if lock.name.endswith(".lock"):
                    lock.with_name(lock.name[: -len(".lock")]).unlink(missing_ok=True)

    def stop(self, timeout: float = 30) -> bool:
        """pg_ctl stop -m fast; True when the server stopped (or was not running)."""
        if not self.initialized():
            return True
        argv = [self.tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"]
        try:
            result = self._run_as_owner(argv, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0 or not (self.data / "postmaster.pid").exists()

    def is_ready(self, port: int) -> bool:
        try:
            result = subprocess.run([self.tool("pg_isready"), "-q", "-h", HOST, "-p", str(port), "-t", "2",
                                     "-U", SUPERUSER, "-d", "postgres"],
                                    capture_output=True, timeout=10, env=_clean_env())
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0

    def ensure_database(self, port: int) -> None:
        """Create the ``rollcall`` role (LOGIN, CREATEDB) and database (owned by it) when missing."""
        script = (
            f"SELECT 'CREATE ROLE {DB_USER} LOGIN CREATEDB' "
            f"WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{DB_USER}')\\gexec\n"
            f"SELECT 'CREATE DATABASE {DB_NAME} OWNER {DB_USER}' "
            f"WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}')\\gexec\n"
        )
        argv = [self.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port),
                "-U", SUPERUSER, "-d", "postgres"]
        result = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60, env=_clean_env())
        if result.returncode != 0:
            raise RollcallError(
                f"could not create the {DB_NAME} database in the embedded PostgreSQL on port {port} "
                f"({_last_line(result.stderr)})"
            )


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
