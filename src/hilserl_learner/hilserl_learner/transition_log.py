"""Append-only, crash-safe log of received transitions (ROS-free).

The learner acknowledges a transition only once its record is on disk, so
``kill -9`` at any instant loses nothing that was acknowledged.

Layout. A log is a folder of *segments* ``seg_<first position>.tlog``. Every
record has a global *position* (0, 1, 2, ... over the log's life); a segment's
name is the position of its first record. A record is framed as

    magic "TLR1" | body length u32 | crc32 u32 | actor-id length u16 | sequence u64 | body

(little endian; body = actor id UTF-8 + opaque payload; the CRC covers the
actor-id length, the sequence and the body). The payload is whatever the caller
stores; the learner node stores the CDR-serialised ``Transition`` message (no pickle).

Writing. ``append`` only buffers; ``sync`` writes the buffered records with one
``write`` and one ``fsync`` and returns the records that are now durable. A
threaded writer splits it: ``take_pending`` (cheap: it detaches the buffered
batch) under the lock that guards ``append``, then ``write_batch`` without it,
so records keep arriving while the disk works (group commit: a slow ``fsync``
makes the next batch larger, not the intake slower). One thread writes batches;
file operations (``write_batch``, ``retire``, ``records``, ``close``) hold the
log's own I/O lock.
``sync_due`` says when a batch is due (``sync_every`` records or
``sync_interval_s`` after its oldest record), so a caller fsyncs in small
batches both under load and when traffic is sparse. A segment is closed (and
a new one started) at a sync boundary once it exceeds ``segment_bytes``.

Recovery. Opening a log scans every segment, keeps every complete record with a
valid CRC, and truncates the first invalid or partial record and everything
after it in the *last* segment (a torn tail from a crash). An invalid record in
an earlier, closed segment is corruption, not a crash, and is refused with an
error naming the file and offset.

Retirement. A checkpoint stores the position of the last record it contains;
``retire(position)`` deletes the segments whose records all lie at or below it;
after a restart the caller replays ``records(after=position)``.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

MAGIC = b"TLR1"
_HEADER = struct.Struct("<4sIIHQ")  # magic, body length, crc32, actor-id length, sequence
_CRC_FIELDS = struct.Struct("<HQ")
HEADER_BYTES = _HEADER.size
MAX_BODY_BYTES = 1 << 30
SEGMENT_PREFIX = "seg_"
SEGMENT_SUFFIX = ".tlog"


class TransitionLogError(RuntimeError):
    """A log file is corrupt (not merely torn at its tail) or cannot be used."""


@dataclass(frozen=True)
class LogRecord:
    position: int
    actor_id: str
    sequence: int
    payload: bytes


@dataclass(frozen=True)
class DurableRecord:
    """What one ``sync`` made durable (the caller acknowledges these)."""

    position: int
    actor_id: str
    sequence: int


@dataclass(frozen=True)
class PendingBatch:
    """Records detached by ``take_pending``, to be written by ``write_batch``."""

    data: bytes
    records: list[DurableRecord]


@dataclass
class RecoveryReport:
    """What ``open`` found on disk."""

    segments: int = 0
    records: int = 0
    truncated_bytes: int = 0  # torn tail removed from the last segment
    truncated_file: str = ""


def encode_record(actor_id: str, sequence: int, payload: bytes) -> bytes:
    actor = actor_id.encode("utf-8")
    if len(actor) > 0xFFFF:
        raise ValueError(f"actor id is {len(actor)} bytes long (limit 65535)")
    if not 0 <= sequence < 1 << 64:
        raise ValueError(f"sequence {sequence} out of the uint64 range")
    body = actor + bytes(payload)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"record body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    crc = zlib.crc32(body, zlib.crc32(_CRC_FIELDS.pack(len(actor), sequence)))
    return _HEADER.pack(MAGIC, len(body), crc, len(actor), sequence) + body


def _decode_at(data: memoryview, offset: int) -> tuple[str, int, bytes, int] | None:
    """(actor id, sequence, payload, next offset) of the record at ``offset``, or None
    if the bytes there are not one complete valid record."""
    if offset + HEADER_BYTES > len(data):
        return None
    magic, body_len, crc, actor_len, sequence = _HEADER.unpack_from(data, offset)
    if magic != MAGIC or body_len > MAX_BODY_BYTES or actor_len > body_len:
        return None
    start = offset + HEADER_BYTES
    end = start + body_len
    if end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body, zlib.crc32(_CRC_FIELDS.pack(actor_len, sequence))) != crc:
        return None
    try:
        actor_id = bytes(body[:actor_len]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return actor_id, sequence, bytes(body[actor_len:]), end


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_path(directory: Path, first_position: int) -> Path:
    return directory / f"{SEGMENT_PREFIX}{first_position:020d}{SEGMENT_SUFFIX}"


def _segment_start(path: Path) -> int:
    try:
        return int(path.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)])
    except ValueError as error:
        raise TransitionLogError(f"{path}: not a transition-log segment name") from error


def read_log(directory: str | Path, after: int = -1) -> list[LogRecord]:
    """Valid records of a log folder, read-only (a writer may be appending: the scan
    stops at the first incomplete record and changes nothing on disk)."""
    directory = Path(directory)
    out = []
    paths = sorted(directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"), key=_segment_start)
    for path in paths:
        view = memoryview(path.read_bytes())
        offset, position = 0, _segment_start(path)
        while (decoded := _decode_at(view, offset)) is not None:
            actor_id, sequence, payload, offset = decoded
            if position > after:
                out.append(LogRecord(position, actor_id, sequence, payload))
            position += 1
    return out


class TransitionLog:
    """One writer of a log folder (see the module docstring).

    ``crash_hook`` (tests only) is called with the name of each point of the
    write protocol: "mid_write" (half of a batch written), "after_write"
    (written, not fsynced) and "after_fsync" (durable, not yet reported); a
    test's hook kills the process there.
    """

    def __init__(self, directory: str | Path, segment_bytes: int = 64 << 20,
                 sync_every: int = 64, sync_interval_s: float = 0.01,
                 crash_hook: Callable[[str], None] | None = None):
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be > 0, got {segment_bytes}")
        if sync_every <= 0:
            raise ValueError(f"sync_every must be > 0, got {sync_every}")
        if not sync_interval_s >= 0:
            raise ValueError(f"sync_interval_s must be >= 0, got {sync_interval_s}")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.sync_every = sync_every
        self.sync_interval_s = sync_interval_s
        self._crash_hook = crash_hook
        self._pending = bytearray()
        self._pending_records: list[DurableRecord] = []
        self._oldest_pending = 0.0
        self._io_lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.recovery = self._recover()
        self._fd = -1
        self._open_last_segment()
        self.syncs = 0
        self.sync_seconds_total = 0.0
        self.sync_seconds_max = 0.0

    # -------------------------------------------------------------- recovery
    def segments(self) -> list[Path]:
        """Segment files in position order."""
        return sorted(self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"), key=_segment_start)

    def _scan(self, path: Path) -> tuple[int, int, int]:
        """(valid records, valid bytes, file bytes) of one segment."""
        data = path.read_bytes()
        view = memoryview(data)
        offset = count = 0
        while (decoded := _decode_at(view, offset)) is not None:
            offset = decoded[3]
            count += 1
        return count, offset, len(data)

    def _recover(self) -> RecoveryReport:
        report = RecoveryReport()
        self._last_segment_bytes = 0
        segments = self.segments()
        self._segment_starts = [_segment_start(p) for p in segments]
        next_position = 0
        for index, path in enumerate(segments):
            start = self._segment_starts[index]
            if index > 0 and start != next_position:
                raise TransitionLogError(f"{path}: starts at position {start}, the previous segment "
                                         f"ends before {next_position} (missing or extra segment)")
            count, valid, size = self._scan(path)
            if valid != size:
                if index != len(segments) - 1:
                    raise TransitionLogError(f"{path}: invalid record at byte {valid} of {size} in a "
                                             "closed segment (corrupt file)")
                with open(path, "r+b") as handle:  # torn tail of the segment being written
                    handle.truncate(valid)
                    handle.flush()
                    os.fsync(handle.fileno())
                report.truncated_bytes = size - valid
                report.truncated_file = str(path)
            report.records += count
            next_position = start + count
            self._last_segment_bytes = valid
        report.segments = len(segments)
        self.durable_position = next_position - 1  # position of the last durable record
        self.next_position = next_position
        return report

    def _open_last_segment(self) -> None:
        if not self._segment_starts:
            self._start_segment(self.next_position)
            return
        path = _segment_path(self.directory, self._segment_starts[-1])
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _start_segment(self, first_position: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = _segment_path(self.directory, first_position)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        _fsync_dir(self.directory)
        self._segment_starts.append(first_position)
        self._last_segment_bytes = 0

    def skip_to(self, position: int) -> None:
        """Continue numbering at ``position`` when a checkpoint holds everything before it
        but the log ends earlier (emptied or replaced): the old segments are deleted."""
        if self._pending:
            raise TransitionLogError("skip_to with unsynced records")
        if position <= self.next_position:
            return
        os.close(self._fd)
        self._fd = -1
        for start in self._segment_starts:
            os.unlink(_segment_path(self.directory, start))
        self._segment_starts = []
        self.next_position = position
        self.durable_position = position - 1
        self._start_segment(position)

    # --------------------------------------------------------------- writing
    def append(self, actor_id: str, sequence: int, payload: bytes) -> int:
        """Buffer one record; returns its position (durable after the next ``sync``)."""
        frame = encode_record(actor_id, sequence, payload)
        if not self._pending:
            self._oldest_pending = time.monotonic()
        self._pending += frame
        position = self.next_position
        self._pending_records.append(DurableRecord(position, actor_id, sequence))
        self.next_position += 1
        return position

    @property
    def pending(self) -> int:
        """Records appended but not yet durable."""
        return len(self._pending_records)

    def sync_due(self, now: float | None = None) -> bool:
        if not self._pending_records:
            return False
        if len(self._pending_records) >= self.sync_every:
            return True
        now = time.monotonic() if now is None else now
        return now - self._oldest_pending >= self.sync_interval_s

    def seconds_until_due(self, now: float | None = None) -> float | None:
        """Time left before the pending batch must be synced (None: nothing pending)."""
        if not self._pending_records:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, self._oldest_pending + self.sync_interval_s - now)

    def sync(self) -> list[DurableRecord]:
        """Write and fsync the buffered records; returns those now durable, in order."""
        return self.write_batch(self.take_pending())

    def take_pending(self) -> PendingBatch | None:
        """Detach the buffered records (None if there are none); ``write_batch`` makes them durable."""
        if not self._pending_records:
            return None
        batch = PendingBatch(bytes(self._pending), self._pending_records)
        self._pending = bytearray()
        self._pending_records = []
        return batch

    def write_batch(self, batch: PendingBatch | None) -> list[DurableRecord]:
        """Write and fsync a batch from ``take_pending``; returns its records, now durable.
        Batches must be written in the order they were taken (one writer thread)."""
        if batch is None:
            return []
        with self._io_lock:
            started = time.monotonic()
            data = memoryview(batch.data)
            hook = self._crash_hook
            if hook is not None:
                half = len(data) // 2
                self._write_all(data[:half])
                hook("mid_write")
                self._write_all(data[half:])
                hook("after_write")
            else:
                self._write_all(data)
            os.fsync(self._fd)
            if hook is not None:
                hook("after_fsync")
            self._last_segment_bytes += len(data)
            self.durable_position = batch.records[-1].position
            if self._last_segment_bytes >= self.segment_bytes:
                self._start_segment(batch.records[-1].position + 1)
            elapsed = time.monotonic() - started
            self.syncs += 1
            self.sync_seconds_total += elapsed
            self.sync_seconds_max = max(self.sync_seconds_max, elapsed)
        return batch.records

    def _write_all(self, data: memoryview) -> None:
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    # --------------------------------------------------------------- reading
    def records(self, after: int = -1) -> Iterator[LogRecord]:
        """Durable records with position > ``after``, in order (reads the files)."""
        segments = self.segments()
        starts = [_segment_start(p) for p in segments]
        for index, path in enumerate(segments):
            end = starts[index + 1] if index + 1 < len(segments) else None
            if end is not None and end - 1 <= after:
                continue
            view = memoryview(path.read_bytes())
            offset, position = 0, starts[index]
            while position <= self.durable_position and (decoded := _decode_at(view, offset)):
                actor_id, sequence, payload, offset = decoded
                if position > after:
                    yield LogRecord(position, actor_id, sequence, payload)
                position += 1

    # ------------------------------------------------------------ retirement
    def retire(self, position: int) -> int:
        """Delete closed segments whose records all have positions <= ``position``;
        returns how many were deleted. The segment being written is never deleted."""
        removed = 0
        with self._io_lock:
            while len(self._segment_starts) > 1 and self._segment_starts[1] - 1 <= position:
                os.unlink(_segment_path(self.directory, self._segment_starts.pop(0)))
                removed += 1
            if removed:
                _fsync_dir(self.directory)
        return removed

    @property
    def first_position(self) -> int:
        return self._segment_starts[0] if self._segment_starts else self.next_position

    def close(self) -> list[DurableRecord]:
        """Sync what is pending and close the file; returns the records made durable."""
        durable = self.sync() if self._fd >= 0 else []
        with self._io_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        return durable

    def __enter__(self) -> "TransitionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
