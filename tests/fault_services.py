"""A private PostgreSQL cluster, a private Redis server and a private RabbitMQ node that the
fault tests may break.

The shared servers on 5432, 6379 and 5672 serve every other test and must never be
restarted, so the tests that take a store or a broker away start their own: ``initdb`` into
a temporary directory and ``pg_ctl`` on a free port (as the ``postgres`` user when run as
root, since ``initdb`` refuses root); ``redis-server --save "" --appendonly no`` on a free
port, which loses every key when it restarts, as an unpersisted production Redis does; and
a RabbitMQ node of its own name on a free port, its database in a temporary directory, which
keeps its durable queues and persistent messages when it restarts. A missing binary fails
the test, naming it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, what: str, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not listen on port {port} within {timeout}s")
            time.sleep(0.05)


def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        pytest.fail(
            f"the fault tests need PostgreSQL's {name} (not under /usr/lib/postgresql/*/bin "
            "nor on PATH): apt-get install postgresql",
            pytrace=False,
        )
    return on_path


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class PrivatePostgres:
    """A PostgreSQL cluster of our own on a free port; ``restart`` takes it down for a while."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fault-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            self._user = "postgres"
            try:
                entry = pwd.getpwnam(self._user)
            except KeyError:
                pytest.fail("the fault tests run as root and need a 'postgres' user for initdb")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(
                f"{' '.join(argv[:2])} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def _pg_ctl(self, *argv: str) -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), *argv)

    def init(self) -> None:
        self._run(
            _postgres_bin("initdb"),
            *("-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"),
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._pg_ctl("-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        _wait_for_port(self.port, "the private PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def close(self) -> None:
        with contextlib.suppress(BaseException):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A Redis server of our own on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "the fault tests need redis-server on PATH: apt-get install redis-server",
                pytrace=False,
            )
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fault-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=(self.dir / "server.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, "the private Redis")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class PrivateRabbitMQ:
    """A RabbitMQ node of our own: a name of its own (never the shared ``rabbit@localhost``),
    a free AMQP port and a free distribution port, its database, logs and Erlang cookie in a
    temporary directory, no plugins and no configuration but the defaults (``guest`` may log
    in from 127.0.0.1). ``stop`` then ``start`` brings it back with what it kept on disk.

    ``rabbitmq-server`` is run from ``/usr/lib/rabbitmq/bin``: the one on PATH
    (``/usr/sbin``) switches to the ``rabbitmq`` user, who cannot use a directory root made.
    The node registers with the machine's ``epmd`` (started by the first Erlang node; the
    shared node's, on a machine that runs one).
    """

    def __init__(self) -> None:
        self.server = RABBITMQ_BIN / "rabbitmq-server"
        self.ctl = RABBITMQ_BIN / "rabbitmqctl"
        if not (self.server.exists() and self.ctl.exists()):
            pytest.fail(
                f"the fault tests need RabbitMQ's rabbitmq-server and rabbitmqctl in "
                f"{RABBITMQ_BIN}: apt-get install rabbitmq-server",
                pytrace=False,
            )
        self.port = free_port()
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self.node = f"nexios-fault-{self.port}-{os.getpid()}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="fault-rabbitmq-"))
        self.log = self.dir / "server.log"
        self.pid_file = self.dir / "pid"
        (self.dir / "plugins").write_text("[].\n")
        (self.dir / "adv.config").write_text("[].\n")
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        self.env = {
            **environ,
            "HOME": str(self.dir),  # the Erlang cookie the node and rabbitmqctl share
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "RABBITMQ_CONFIG_FILE": str(self.dir / "none"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "adv.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "nothing"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def _ctl(self, *argv: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.ctl), "-n", self.node, *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        self.pid_file.unlink(missing_ok=True)  # a node killed leaves its pid behind
        with self.log.open("ab") as log:
            # A session of its own: the script's shell, the Erlang VM and the VM's helpers
            # are one process group, which ``stop`` can kill if the node does not halt.
            self.proc = subprocess.Popen(
                [str(self.server)],
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            done = self._ctl("wait", str(self.pid_file), "--timeout", str(int(STARTUP_TIMEOUT)))
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            said = "" if done is None else done.stdout + done.stderr
            pytest.fail(
                f"the private RabbitMQ ({self.node}) did not start:\n{said}"
                f"{self.log.read_text()[-6000:]}"
            )
        _wait_for_port(self.port, "the private RabbitMQ")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                halting = self._ctl("stop", timeout=60).returncode == 0
            except (subprocess.SubprocessError, OSError):
                halting = False
            if not (halting and _exited(proc, 30)):
                proc.terminate()  # the script stops the VM it started
                if not _exited(proc, 15):
                    proc.kill()
                    proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    server = PrivateRabbitMQ()
    try:
        server.start()
        yield server
    finally:
        server.close()
