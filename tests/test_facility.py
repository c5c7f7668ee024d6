"""The facility catalog (issue 12): `hotstage serve --database postgresql://...`, two rigs writing at once.

A PostgreSQL cluster of the test's own (``initdb`` + ``pg_ctl`` from Debian's ``postgresql`` package, which
``.ci/run`` installs): a temporary directory, a free port on 127.0.0.1 only, no Unix socket outside that directory,
scram-sha-256 authentication with generated passwords (the superuser's and the ``hotstage`` role's, which owns the
``hotstage`` database, as the README's facility set-up makes them). As root the cluster runs as the ``postgres``
user (PostgreSQL refuses to run as root). `hotstage serve --database` serves it behind the usual keys; two
``hotstage run`` sessions (simulated rigs, fast time scale, live analysis on) write through it at the same time, and
every run they made must be in the catalog whole: stop document "success", each stream's events numbered 1..N
exactly once with N the stop document's count, the derived runs likewise.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_catalog_server import READ_KEY, WRITE_KEY, Server, free_port, serve_env
from tiled.client import from_uri
from tiled.client.utils import ClientError
from tiled.queries import Key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # two sessions at once: minutes on a loaded machine

HOTSTAGE = shutil.which("hotstage") or str(Path(sys.executable).with_name("hotstage"))
DB_USER = DB_NAME = "hotstage"

# Short enough for CI, long enough for the live analysis to see a transition (cf. tests/test_cli.py).
PROGRAM = """\
start_C = 25
[[segment]]
kind = "ramp"
to_C = 100
rate_C_per_min = 20
[[segment]]
kind = "hold"
minutes = 1
[[segment]]
kind = "cool"
to_C = 60
rate_C_per_min = 20
"""
RIG = "[rig]\ntime_scale = 240\n[cadence]\nxrd = { every_C = 10 }\n"


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL's binaries (not on PATH there); a clear failure when none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail("PostgreSQL is not installed (initdb not found): `apt-get install postgresql` (.ci/run does)")


class Cluster:
    """A throw-away PostgreSQL cluster on 127.0.0.1:<free port> with a ``hotstage`` role and database."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.superuser_password = secrets.token_urlsafe(24)
        self.password = secrets.token_urlsafe(24)  # the hotstage role's: what a facility gives its server
        root = os.geteuid() == 0
        # as root, under /tmp: $TMPDIR may be a directory the postgres user cannot enter
        self.dir = Path(tempfile.mkdtemp(prefix="hotstage-pg-", dir="/tmp" if root else None))
        self.as_user: list[str] = []
        if root:  # postgres refuses to run as root: run it as the package's system user
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = self.dir / "pw"
        pwfile.write_text(self.superuser_password)
        if self.as_user:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        self._pg("initdb", "-D", str(self.dir / "db"), "-U", "postgres", "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-sync")
        pwfile.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.dir / "db"), "-l", str(self.dir / "log"), "-o", options, "-w", "-t", "120",
                 "start")
        self.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{self.password}'",
                  f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")

    @property
    def uri(self) -> str:
        """The database URI as `hotstage serve --database` takes it: no password."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def _pg(self, program: str, *args: str) -> None:
        result = subprocess.run([*self.as_user, str(self.bin / program), *args], capture_output=True, text=True,
                                timeout=180)
        assert result.returncode == 0, f"{program}: {result.stderr}"

    def psql(self, *commands: str, user: str = "postgres", database: str = "postgres") -> str:
        """Run SQL as ``user`` over TCP with its password (from the environment, never on the command line)."""
        password = self.superuser_password if user == "postgres" else self.password
        args = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", database,
                "-v", "ON_ERROR_STOP=1", "-qAt"]
        for command in commands:
            args += ["-c", command]
        result = subprocess.run(args, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PGPASSWORD": password})
        assert result.returncode == 0, result.stderr
        return result.stdout

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.dir / "db"), "-m", "fast", "-w",
                        "stop"], capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pg = Cluster()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`hotstage serve --database` on the cluster; the password only in the server's environment (PGPASSWORD)."""
    data = tmp_path_factory.mktemp("facility") / "arrays"
    srv = Server(data, "--database", cluster.uri, PGPASSWORD=cluster.password)
    srv.data = data
    yield srv
    srv.stop()


def hotstage_run(workdir: Path, server: Server, api_key: str = WRITE_KEY) -> subprocess.CompletedProcess[str]:
    """One session on its own simulated rig, writing through the server (and its own spool directory)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prog.toml").write_text(PROGRAM)
    (workdir / "rig.toml").write_text(RIG)
    env = {**serve_env(), "HOTSTAGE_TILED_URI": server.uri, "TILED_API_KEY": api_key,
           "HOTSTAGE_SPOOL": str(workdir / "spool")}
    return subprocess.run([HOTSTAGE, "run", "--program", str(workdir / "prog.toml"), "--rig", str(workdir / "rig.toml"),
                           "--no-progress", "--json"], capture_output=True, text=True, timeout=600, env=env,
                          cwd=workdir)


def assert_complete(run) -> dict[str, int]:  # noqa: ANN001 - a tiled BlueskyRun client
    """The run ended "success" and each stream holds events 1..N once, N the stop document's count."""
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success", stop
    counts = stop["num_events"]
    assert set(run) == set(counts), (set(run), counts)
    for stream, n in counts.items():
        seq = np.asarray(run[stream]["seq_num"].read())
        assert n > 0 and sorted(seq.tolist()) == list(range(1, n + 1)), (stream, n, seq)
    return counts


@pytest.fixture(scope="module")
def two_runs(server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two `hotstage run` sessions started together, each on its own simulated rig, both through the server."""
    root = tmp_path_factory.mktemp("rigs")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda name: hotstage_run(root / name, server), ["rig-a", "rig-b"]))
    for result in results:
        assert result.returncode == 0, result.stderr
    return [json.loads(result.stdout)["uid"] for result in results]


def test_two_sessions_write_at_once_and_nothing_is_lost(server: Server, cluster: Cluster,
                                                        two_runs: list[str]) -> None:
    assert two_runs[0] != two_runs[1]
    catalog = from_uri(server.uri, api_key=READ_KEY)
    for uid in two_runs:
        assert_complete(catalog[uid])
        derived = list(catalog.search(Key("start.derived_from") == uid))
        assert len(derived) == 1, derived
        assert_complete(catalog[derived[0]])
    # the runs are in PostgreSQL, only the arrays beside the keys file (no SQLite catalog or table store)
    top = cluster.psql("SELECT key FROM nodes WHERE parent = 0", user=DB_USER, database=DB_NAME).split()
    assert set(two_runs) <= set(top)
    assert (server.data / "data").is_dir()
    # the tables' assets point into the database, and no stored URI carries the password
    uris = cluster.psql("SELECT DISTINCT data_uri FROM assets", user=DB_USER, database=DB_NAME).split()
    assert f"postgresql://127.0.0.1:{cluster.port}/{DB_NAME}" in uris
    assert not [uri for uri in uris if cluster.password in uri]
    assert not [p for p in server.data.iterdir() if p.suffix in (".db", ".sqlite")]


def test_the_read_key_cannot_change_a_run(server: Server, two_runs: list[str]) -> None:
    uid = two_runs[0]
    run = from_uri(server.uri, api_key=READ_KEY)[uid]
    stop = dict(run.metadata["stop"])
    with pytest.raises(ClientError, match="403"):
        run.update_metadata({"stop": {**stop, "exit_status": "tampered"}})
    assert httpx.get(f"{server.uri}/api/v1/metadata/{uid}", timeout=10).status_code == 401
    assert from_uri(server.uri, api_key=WRITE_KEY)[uid].metadata["stop"]["exit_status"] == "success"


def test_a_wrong_api_key_records_nothing(server: Server, tmp_path: Path) -> None:
    before = set(from_uri(server.uri, api_key=READ_KEY))
    result = hotstage_run(tmp_path / "rig", server, api_key=secrets.token_hex(24))
    # checked before the session opens the rig (acquisition.tiled_errors): one line, bad input
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hotstage: error: "), result.stderr
    assert "401" in result.stderr and "API key" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert set(from_uri(server.uri, api_key=READ_KEY)) == before


def serve_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data: Path, *args: str,
               **env: str) -> tuple[int, str, str]:
    """`hotstage --data DATA serve --port P ARGS` in this process, for starts that must fail (status, out, err)."""
    from hotstage.acquisition.cli import main

    for name in ("HOTSTAGE_TILED_URI", "HOTSTAGE_DATA", "HOTSTAGE_READ_API_KEY", "HOTSTAGE_CATALOG_DATABASE",
                 "PGPASSWORD", "PGUSER"):
        monkeypatch.setenv(name, "")  # recorded, so that whatever the command sets is undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setenv("PGPASSFILE", str(data.parent / "no-pgpass"))  # not the developer's ~/.pgpass
    monkeypatch.setenv("TILED_API_KEY", WRITE_KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        status = main(["--data", str(data), "serve", "--port", str(free_port()), *args])
    except SystemExit as exc:  # argparse
        status = exc.code
    out = capsys.readouterr()
    return int(status), out.out, out.err


def assert_one_line(result: tuple[int, str, str], *needles: str) -> None:
    status, out, err = result
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("hotstage: error: "), err
    assert out == "" and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def test_a_wrong_password_is_one_line_without_the_password(cluster: Cluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = secrets.token_urlsafe(16)
    result = serve_once(monkeypatch, capsys, tmp_path / "d", "--database", cluster.uri, PGPASSWORD=wrong)
    assert_one_line(result, "--database", cluster.uri, "authentication failed")
    assert wrong not in result[2]
    uri = cluster.uri.replace(f"{DB_USER}@", f"{DB_USER}:{wrong}@")  # the password inside the URI (environment)
    result = serve_once(monkeypatch, capsys, tmp_path / "d", HOTSTAGE_CATALOG_DATABASE=uri)
    assert_one_line(result, "$HOTSTAGE_CATALOG_DATABASE", cluster.uri, "authentication failed")
    assert wrong not in result[2]
    assert not (tmp_path / "d" / "server-keys.json").exists()  # nothing generated for a server that never ran


def test_a_missing_database_is_one_line(cluster: Cluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    uri = cluster.uri.rsplit("/", 1)[0] + "/nosuchdb"
    assert_one_line(serve_once(monkeypatch, capsys, tmp_path / "d", "--database", uri, PGPASSWORD=cluster.password),
                    uri, "does not exist")


def test_a_role_that_may_not_create_tables_is_one_line(cluster: Cluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    password = secrets.token_urlsafe(16)
    cluster.psql(f"CREATE ROLE visitor LOGIN PASSWORD '{password}'", "CREATE DATABASE notmine")  # owned by postgres
    uri = f"postgresql://visitor@127.0.0.1:{cluster.port}/notmine"
    assert_one_line(serve_once(monkeypatch, capsys, tmp_path / "d", "--database", uri, PGPASSWORD=password),
                    uri, "cannot make the catalog's tables", "permission denied")
    assert cluster.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database="notmine") == "0\n"


def test_no_server_there_is_one_line(tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"postgresql://{DB_USER}@127.0.0.1:{free_port()}/{DB_NAME}"
    assert_one_line(serve_once(monkeypatch, capsys, tmp_path / "d", "--database", uri), uri, "cannot connect")


def test_a_password_on_the_command_line_is_refused(tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    result = serve_once(monkeypatch, capsys, tmp_path / "d", "--database",
                        "postgresql://hotstage:hunter22@127.0.0.1/hotstage")
    assert_one_line(result, "--database", "postgresql://hotstage@127.0.0.1:5432/hotstage", "$PGPASSWORD", "ps")
    assert "hunter22" not in result[2] and not (tmp_path / "d").exists()
