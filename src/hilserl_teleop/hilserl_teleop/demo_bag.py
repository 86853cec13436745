"""rosbag2 (MCAP) files for demonstrations, without rosbag2_py and without ROS. No rclpy here.

- ``message_typestore(msgtypes)``: rosbags' ROS 2 Kilted type store plus every
  type it lacks (e.g. ``hilserl_msgs/msg/EpisodeStatus``), read from the
  ``share/<package>/msg/<Name>.msg`` files of the ``AMENT_PREFIX_PATH``
  prefixes, dependencies included.
- ``BagRecorder``: writes serialized (CDR) messages as they arrive, never
  deserialising them. Every ``flush_period_s`` (default 0.5 s) the open MCAP
  chunk is closed, written and fsynced, so a SIGKILL loses at most that much;
  ``close`` writes the summary and the ``metadata.yaml`` that ``ros2 bag
  info`` reads.
- ``recover_bag(path)``: a bag whose recorder was killed (no ``metadata.yaml``,
  MCAP without summary) is rewritten from its complete chunks into a normal
  bag; the damaged file is kept beside it.
- ``read_bag(path)``: (topic, msgtype, timestamp_ns, cdr bytes) in time order.

Timestamps are receive times in nanoseconds (what ``ros2 bag record`` stores).
"""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

MCAP_MAGIC = b"\x89MCAP0\r\n"
DEFAULT_FLUSH_PERIOD_S = 0.5
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06


class BagError(RuntimeError):
    """A bag cannot be written, read or recovered; the message names the file and the problem."""


# ------------------------------------------------------------------ types
def _msg_file(msgtype: str) -> Path | None:
    package, kind, name = msgtype.split("/")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "share" / package / kind / f"{name}.msg"
        if prefix and candidate.is_file():
            return candidate
    return None


def message_typestore(msgtypes: Iterable[str] = (), store: Typestore | None = None) -> Typestore:
    """Kilted's standard types (or ``store``) plus ``msgtypes`` and what they use, from installed
    .msg files; returns the store."""
    store = store if store is not None else get_typestore(Stores.ROS2_KILTED)
    pending = [t for t in msgtypes if t not in store.fielddefs]
    while pending:
        msgtype = pending.pop()
        if msgtype in store.fielddefs:
            continue
        if msgtype.count("/") != 2:
            raise BagError(f"message type {msgtype!r}: expected package/msg/Name")
        path = _msg_file(msgtype)
        if path is None:
            raise BagError(f"message type {msgtype}: no share/{msgtype}.msg in AMENT_PREFIX_PATH "
                           "(is its package built and sourced?)")
        types = get_types_from_msg(path.read_text(), msgtype)
        missing = {field_type for _, fields in types.values() for field_type in _nested(fields)
                   if field_type not in store.fielddefs and field_type not in types}
        if missing:
            pending.append(msgtype)  # again once its dependencies are in
            pending.extend(sorted(missing))
            continue
        store.register(types)
    return store


def _nested(fields) -> Iterator[str]:
    """Message type names that a rosbags field list refers to."""
    for _, (kind, detail) in fields:
        if kind == Nodetype.NAME:  # a nested message
            yield detail
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and detail[0][0] == Nodetype.NAME:
            yield detail[0][1]  # an array or sequence of messages


def deserialize(store: Typestore, data: bytes, msgtype: str):
    """A message (rosbags dataclass, the ROS field names) from CDR bytes as recorded.

    Like ``Typestore.deserialize_cdr``, but accepts the up to 7 bytes of padding that
    rmw_fastrtps / rclpy append to round a message up to 8 bytes (rosbags accepts 3: a
    ``JointState`` with an empty ``effort`` was refused).
    """
    if len(data) < 4 or data[0] != 0 or data[1] not in (0, 1):
        raise BagError(f"{msgtype}: not a CDR message (header {bytes(data[:4]).hex()})")
    msgdef = store.get_msgdef(msgtype)
    parse = msgdef.deserialize_cdr_le if data[1] else msgdef.deserialize_cdr_be
    try:
        message, position = parse(memoryview(data)[4:], 0, msgdef.cls, store)
    except (struct.error, UnicodeDecodeError, ValueError) as error:
        raise BagError(f"{msgtype}: cannot deserialize ({error})") from error
    if len(data) - 4 - position > 7:
        raise BagError(f"{msgtype}: {len(data) - 4 - position} bytes left after the message")
    return message


# ------------------------------------------------------------------ writing
@dataclass
class TopicInfo:
    topic: str
    msgtype: str
    count: int = 0


class BagRecorder:
    """Append-only rosbag2 MCAP writer that bounds what a crash can lose.

    ``path`` is the bag folder (it must not exist). ``add_topic`` before the first
    ``write`` of that topic; ``write`` takes CDR bytes as received.
    """

    def __init__(self, path: str | Path, typestore: Typestore,
                 flush_period_s: float = DEFAULT_FLUSH_PERIOD_S):
        if not flush_period_s > 0:
            raise ValueError(f"flush_period_s must be > 0, got {flush_period_s!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already: choose a new bag folder")
        self.typestore = typestore
        self.flush_period_s = float(flush_period_s)
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.topics: dict[str, TopicInfo] = {}
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self.closed = False

    @property
    def mcap_path(self) -> Path:
        return self.path / f"{self.path.name}.mcap"

    def add_topic(self, topic: str, msgtype: str) -> None:
        if topic in self._connections:
            raise BagError(f"topic {topic} is already in {self.path}")
        if msgtype not in self.typestore.fielddefs:
            raise BagError(f"topic {topic}: message type {msgtype} is not in the type store")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
        self.topics[topic] = TopicInfo(topic, msgtype)

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"topic {topic} was not added to {self.path}")
        self._writer.write(connection, int(timestamp_ns), data)
        self.topics[topic].count += 1
        self._unflushed += 1
        self.flush_if_due()

    def flush_if_due(self) -> bool:
        if self._unflushed and time.monotonic() - self._last_flush >= self.flush_period_s:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Close the open chunk and make it durable (write, fsync)."""
        storage = self._writer.storage
        if self._unflushed and storage is not None:
            storage.close_chunk()
            storage.bio.flush()
            os.fsync(storage.bio.fileno())
        self._unflushed = 0
        self._last_flush = time.monotonic()

    @property
    def message_count(self) -> int:
        return sum(info.count for info in self.topics.values())

    def close(self) -> None:
        """Write the summary and metadata.yaml; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        for path in (self.mcap_path, self.path / "metadata.yaml"):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


# ------------------------------------------------------------------ reading
def _incomplete(path: Path) -> BagError:
    return BagError(f"{path}: no metadata.yaml (not a bag, or its recorder was killed: "
                    "run recover_bag / `python -m hilserl_teleop.demo_bag recover` on it)")


def _complete(path: Path) -> Path:
    if not (path / "metadata.yaml").is_file():
        raise _incomplete(path)
    return path


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """The complete bags of ``paths`` (bag folders, or folders of bag folders), in name order;
    a folder holding a killed recording that was not recovered is an error, not skipped."""
    paths = [Path(p) for p in paths]
    bags: list[Path] = []
    for path in paths:
        if (path / "metadata.yaml").is_file():
            bags.append(path)
        elif path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.endswith(".damaged")):
                if (child / "metadata.yaml").is_file():
                    bags.append(child)
                elif any(child.glob("*.mcap")):
                    raise _incomplete(child)  # a killed recording is not skipped
        else:
            raise BagError(f"{path}: no such bag or folder of bags")
    if not bags:
        raise BagError(f"no bag in {[str(p) for p in paths]}")
    return bags


def bag_topics(path: str | Path) -> list[tuple[str, str]]:
    """(topic, msgtype) of each connection of a complete bag."""
    with Reader(_complete(Path(path))) as reader:
        return [(c.topic, c.msgtype) for c in reader.connections]


def read_bag(path: str | Path, topics: Iterable[str] | None = None
             ) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, timestamp_ns, cdr bytes) of a complete bag, in time order."""
    path = _complete(Path(path))
    wanted = set(topics) if topics is not None else None
    with Reader(path) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for connection, timestamp, data in reader.messages(connections=connections):
            yield connection.topic, connection.msgtype, timestamp, bytes(data)


def _read_str(buf: io.BytesIO) -> str:
    (size,) = struct.unpack("<I", buf.read(4))
    return buf.read(size).decode()


def scan_mcap(path: str | Path) -> tuple[dict[int, tuple[str, str]], list[tuple[int, int, bytes]]]:
    """Channels {id: (topic, msgtype)} and messages [(channel id, log time, data)] of every
    complete chunk of an MCAP file, stopping at the first incomplete record."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(MCAP_MAGIC):
        raise BagError(f"{path}: not an MCAP file (bad magic)")
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    messages: list[tuple[int, int, bytes]] = []
    offset = len(MCAP_MAGIC)
    while offset + 9 <= len(data):
        opcode = data[offset]
        (length,) = struct.unpack_from("<Q", data, offset + 1)
        end = offset + 9 + length
        if end > len(data):
            break  # the record the kill cut short
        if opcode == _OP_CHUNK:
            body = io.BytesIO(data[offset + 9:end])
            body.read(8 + 8 + 8 + 4)  # start, end, uncompressed size, crc
            if _read_str(body):
                raise BagError(f"{path}: compressed chunks are not recoverable here")
            (records_size,) = struct.unpack("<Q", body.read(8))
            _scan_records(io.BytesIO(body.read(records_size)), schemas, channels, messages)
        offset = end
    return channels, messages


def _scan_records(buf: io.BytesIO, schemas, channels, messages) -> None:
    raw = buf.getvalue()
    offset = 0
    while offset + 9 <= len(raw):
        opcode = raw[offset]
        (length,) = struct.unpack_from("<Q", raw, offset + 1)
        record = io.BytesIO(raw[offset + 9:offset + 9 + length])
        if opcode == _OP_SCHEMA:
            (schema_id,) = struct.unpack("<H", record.read(2))
            schemas[schema_id] = _read_str(record)
        elif opcode == _OP_CHANNEL:
            channel_id, schema_id = struct.unpack("<HH", record.read(4))
            channels[channel_id] = (_read_str(record), schemas.get(schema_id, ""))
        elif opcode == _OP_MESSAGE:
            channel_id, _sequence, log_time, _publish_time = struct.unpack("<HIQQ", record.read(22))
            messages.append((channel_id, log_time, record.read()))
        offset += 9 + length


def recover_bag(path: str | Path, typestore: Typestore | None = None) -> dict[str, int]:
    """Rewrite a killed recorder's bag from its complete chunks; returns messages per topic.

    The damaged MCAP is kept as ``<bag>.damaged/``; the recovered bag takes the original
    folder name, so readers find it where it was.
    """
    path = Path(path)
    if (path / "metadata.yaml").is_file():
        raise BagError(f"{path}: has a metadata.yaml, nothing to recover")
    files = sorted(path.glob("*.mcap"))
    if len(files) != 1:
        raise BagError(f"{path}: expected one .mcap file to recover, found {len(files)}")
    channels, messages = scan_mcap(files[0])
    store = typestore or message_typestore({msgtype for _, msgtype in channels.values()})
    damaged = path.with_name(path.name + ".damaged")
    if damaged.exists():
        raise BagError(f"{damaged} exists: move it away before recovering {path}")
    path.rename(damaged)
    recorder = BagRecorder(path, store)
    for topic, msgtype in channels.values():
        recorder.add_topic(topic, msgtype)
    for channel_id, log_time, data in sorted(messages, key=lambda m: m[1]):
        recorder.write(channels[channel_id][0], log_time, data)
    recorder.close()
    return {info.topic: info.count for info in recorder.topics.values()}


def main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Demo bags: recover a killed recording, or list one.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("recover", help="rewrite a killed recorder's bag").add_argument("bag")
    sub.add_parser("info", help="topics and message counts").add_argument("bag")
    args = parser.parse_args(argv)
    try:
        if args.command == "recover":
            counts = recover_bag(args.bag)
            print(f"recovered {args.bag}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        else:
            with Reader(args.bag) as reader:
                for c in reader.connections:
                    print(f"{c.topic}  {c.msgtype}  {c.msgcount}")
                print(f"duration {reader.duration / 1e9:.2f} s, {reader.message_count} messages")
    except BagError as error:
        print(f"demo_bag: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
