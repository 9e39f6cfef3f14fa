"""A throwaway PostgreSQL server on loopback for storage tests, from Debian's packages.

The fixture finds the server binaries (/usr/lib/postgresql/*/bin); when they are missing
and the tests run as root with apt-get available, it installs them (`apt-get install -y
postgresql`; parallel test workers take turns under a file lock, so the second finds
the first's install instead of failing on apt's own lock). It then creates a cluster in
a temporary folder (as the unprivileged `postgres` user when running as root: PostgreSQL
refuses to run as root), starts it on a free loopback port with trust authentication,
creates a database and yields its URL. Where no server can be started the tests skip, saying why.
"""
from __future__ import annotations

import fcntl
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_TIMEOUT_S = 600


def server_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb") if Path(p).with_name("pg_ctl").exists()]
    return max(found, key=lambda p: float(p.parent.name) if p.parent.name.replace(".", "").isdigit() else 0.0) \
        if found else None


def install_server() -> str | None:
    """apt-get the server as root; None on success, else why not."""
    if os.geteuid() != 0:
        return "PostgreSQL server binaries are missing and the tests do not run as root to install them"
    if not shutil.which("apt-get"):
        return "PostgreSQL server binaries are missing and there is no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(cmd)}' took longer than {INSTALL_TIMEOUT_S} s"
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return f"'{' '.join(cmd)}' failed: {last}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """postgresql+psycopg2://postgres@127.0.0.1:PORT/hwnas on a fresh cluster."""
    try:
        import psycopg2
    except ImportError:
        pytest.skip("the psycopg2 driver is not installed (pip install psycopg2-binary)")
    bindir = server_bindir()
    if bindir is None:
        with open(Path(tempfile.gettempdir()) / "hwnas-postgres-install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            bindir = server_bindir()
            why = install_server() if bindir is None else None
            bindir = bindir or server_bindir()
        if bindir is None:
            pytest.skip(why or "PostgreSQL server binaries not found after installing the postgresql package")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        run_as = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else []
        if not run_as:
            pytest.skip("running as root without runuser to start the server as the 'postgres' user")
    root = Path(tempfile.mkdtemp(prefix="hwnas-pg-"))
    data, log = root / "data", root / "server.log"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    started = False
    try:
        init = subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-sync"], check=False, capture_output=True, text=True, timeout=120)
        if init.returncode:
            pytest.skip(f"initdb failed: {(init.stderr.strip().splitlines() or ['?'])[-1]}")
        start = subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                               check=False, capture_output=True, text=True, timeout=120)
        if start.returncode:
            detail = log.read_text().strip().splitlines()[-1:] if log.exists() else [start.stderr.strip()]
            pytest.skip(f"the PostgreSQL server did not start: {detail}")
        started = True
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE hwnas")
        conn.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/hwnas"
    finally:
        if started:
            subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           check=False, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
