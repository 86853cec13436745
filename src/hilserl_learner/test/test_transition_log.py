"""Transition log: framing, recovery, retirement, and kill -9 at each step of a sync.

The crash tests run a real child process that writes the log and reports each
acknowledgement (a sync's durable records) on stdout; a crash hook kills it
deterministically at one point of the write protocol. The parent then reopens
the log: every acknowledged record must be there, intact, once, in order.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilserl_learner.transition_log import (
    HEADER_BYTES,
    TransitionLog,
    TransitionLogError,
    encode_record,
)


def payload_of(sequence: int) -> bytes:
    """Deterministic payload of varying length (so torn tails fall anywhere)."""
    rng = random.Random(sequence)
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))


def write_records(log: TransitionLog, actor: str, sequences) -> list:
    durable = []
    for sequence in sequences:
        log.append(actor, sequence, payload_of(sequence))
    durable += log.sync()
    return durable


def test_round_trip_positions_and_segments(tmp_path):
    log = TransitionLog(tmp_path, segment_bytes=2000, sync_every=4)
    durable = []
    for start in range(0, 60, 6):
        durable += write_records(log, "a", range(start, start + 6))
    assert [d.sequence for d in durable] == list(range(60))
    assert [d.position for d in durable] == list(range(60))
    assert log.durable_position == 59
    segments = log.segments()
    assert len(segments) > 3, "2000-byte segments must roll"
    log.close()

    reopened = TransitionLog(tmp_path, segment_bytes=2000)
    assert reopened.recovery.records == 60 and reopened.recovery.truncated_bytes == 0
    records = list(reopened.records())
    assert [(r.position, r.actor_id, r.sequence) for r in records] == [(i, "a", i) for i in range(60)]
    assert all(r.payload == payload_of(r.sequence) for r in records)
    assert [r.sequence for r in reopened.records(after=40)] == list(range(41, 60))
    # New records continue the numbering.
    reopened.append("b", 0, b"x")
    assert reopened.sync()[0].position == 60
    reopened.close()


def test_retire_keeps_everything_after_the_position(tmp_path):
    log = TransitionLog(tmp_path, segment_bytes=1500)
    for start in range(0, 100, 5):
        write_records(log, "a", range(start, start + 5))
    before = len(log.segments())
    removed = log.retire(70)
    assert removed > 0 and len(log.segments()) == before - removed
    remaining = [r.position for r in log.records()]
    assert remaining[0] <= 71 and remaining[-1] == 99
    assert remaining == list(range(remaining[0], 100))
    assert [r.position for r in log.records(after=70)] == list(range(71, 100))
    log.retire(10_000)  # the segment being written survives
    assert len(log.segments()) == 1
    log.close()
    assert TransitionLog(tmp_path).next_position == 100


def test_skip_to_continues_after_a_checkpoint(tmp_path):
    log = TransitionLog(tmp_path)
    write_records(log, "a", range(3))
    log.skip_to(50)
    log.append("a", 3, b"")
    assert log.sync()[0].position == 50
    log.close()
    reopened = TransitionLog(tmp_path)
    assert [r.position for r in reopened.records()] == [50]


def test_sync_due_by_count_and_by_time(tmp_path):
    log = TransitionLog(tmp_path, sync_every=3, sync_interval_s=0.05)
    assert not log.sync_due()
    log.append("a", 0, b"")
    now = time.monotonic()
    assert not log.sync_due(now)
    assert log.sync_due(now + 0.06)
    assert 0.0 <= log.seconds_until_due(now) <= 0.05
    log.append("a", 1, b"")
    log.append("a", 2, b"")
    assert log.sync_due(now)
    assert log.pending == 3
    log.sync()
    assert log.pending == 0 and log.seconds_until_due() is None
    log.close()


def test_torn_tail_and_garbage_are_truncated(tmp_path):
    log = TransitionLog(tmp_path)
    write_records(log, "a", range(10))
    log.close()
    segment = log.segments()[-1]
    good_size = segment.stat().st_size
    torn = encode_record("a", 10, payload_of(10))
    with open(segment, "ab") as handle:
        handle.write(torn[: len(torn) - 3])
    reopened = TransitionLog(tmp_path)
    assert reopened.recovery.truncated_bytes == len(torn) - 3
    assert segment.stat().st_size == good_size
    assert [r.sequence for r in reopened.records()] == list(range(10))
    reopened.close()
    with open(segment, "ab") as handle:
        handle.write(os.urandom(1000))
    assert [r.sequence for r in TransitionLog(tmp_path).records()] == list(range(10))


def test_bit_flip_in_last_segment_drops_that_record_and_after(tmp_path):
    log = TransitionLog(tmp_path)
    write_records(log, "a", range(10))
    log.close()
    segment = log.segments()[-1]
    data = bytearray(segment.read_bytes())
    offset = sum(HEADER_BYTES + 1 + len(payload_of(i)) for i in range(6))  # record 6
    data[offset + HEADER_BYTES] ^= 0x40  # first body byte
    segment.write_bytes(bytes(data))
    reopened = TransitionLog(tmp_path)
    assert [r.sequence for r in reopened.records()] == list(range(6))
    assert reopened.recovery.truncated_bytes == len(data) - offset


def test_corrupt_closed_segment_is_refused_naming_the_file(tmp_path):
    log = TransitionLog(tmp_path, segment_bytes=500)
    for start in range(0, 40, 4):
        write_records(log, "a", range(start, start + 4))
    log.close()
    first = log.segments()[0]
    data = bytearray(first.read_bytes())
    data[HEADER_BYTES + 2] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(TransitionLogError, match=first.name):
        TransitionLog(tmp_path, segment_bytes=500)


def test_missing_middle_segment_is_refused(tmp_path):
    log = TransitionLog(tmp_path, segment_bytes=500)
    for start in range(0, 40, 4):
        write_records(log, "a", range(start, start + 4))
    log.close()
    middle = log.segments()[1]
    middle.unlink()
    with pytest.raises(TransitionLogError, match="missing or extra segment"):
        TransitionLog(tmp_path)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sync_every"):
        TransitionLog(tmp_path, sync_every=0)
    with pytest.raises(ValueError, match="segment_bytes"):
        TransitionLog(tmp_path, segment_bytes=0)


# --------------------------------------------------------------- crash tests
TOTAL = 60
BATCH = 7
CRASH_AT_SYNC = 4  # the 4th sync is interrupted


def _child(directory: str, point: str, how: str) -> None:
    """Write TOTAL records in batches of BATCH; print 'ACK <seq>' per durable record;
    die at ``point`` during sync number CRASH_AT_SYNC."""
    syncs = {"n": 0}

    def hook(name: str) -> None:
        if syncs["n"] == CRASH_AT_SYNC - 1 and name == point:
            if how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(17)

    log = TransitionLog(directory, segment_bytes=1200, sync_every=BATCH, crash_hook=hook)
    sequence = 0
    while sequence < TOTAL:
        log.append("actor", sequence, payload_of(sequence))
        sequence += 1
        if log.sync_due():
            for record in log.sync():
                print(f"ACK {record.sequence}", flush=True)
            syncs["n"] += 1
    for record in log.close():
        print(f"ACK {record.sequence}", flush=True)
    print("DONE", flush=True)


def _run_child(directory: Path, point: str, how: str) -> tuple[list[int], int]:
    proc = subprocess.run([sys.executable, __file__, "child", str(directory), point, how],
                          capture_output=True, text=True, timeout=60)
    acked = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("ACK")]
    assert "DONE" not in proc.stdout, f"child was not killed at {point}: {proc.stderr}"
    return acked, proc.returncode


@pytest.mark.parametrize("how", ["exit", "sigkill"])
@pytest.mark.parametrize("point", ["mid_write", "after_write", "after_fsync"])
def test_kill_at_each_step_of_a_sync_loses_nothing_acknowledged(tmp_path, point, how):
    acked, returncode = _run_child(tmp_path, point, how)
    assert returncode == (-signal.SIGKILL if how == "sigkill" else 17)
    assert acked == list(range((CRASH_AT_SYNC - 1) * BATCH)), "acks stop at the interrupted sync"

    log = TransitionLog(tmp_path, segment_bytes=1200)
    records = list(log.records())
    sequences = [r.sequence for r in records]
    # Every acknowledged record is there; nothing duplicated; no gap; intact payloads.
    assert sequences[: len(acked)] == acked
    assert sequences == list(range(len(sequences)))
    assert all(r.payload == payload_of(r.sequence) for r in records)
    assert [r.position for r in records] == list(range(len(records)))
    batch_end = CRASH_AT_SYNC * BATCH
    if point == "mid_write":
        # Half a batch reached the file: a torn record was cut off, whole ones before it kept.
        assert len(acked) <= len(sequences) < batch_end
        assert log.recovery.truncated_bytes > 0
    else:
        # The whole batch was written (page cache survives a process kill): kept, unacked.
        assert sequences == list(range(batch_end))
        assert log.recovery.truncated_bytes == 0
    print(f"\n{point}/{how}: acked {len(acked)}, recovered {len(sequences)}, "
          f"truncated {log.recovery.truncated_bytes} bytes")

    # The log keeps working after recovery: resend what was not acknowledged.
    for sequence in range(len(sequences), TOTAL):
        log.append("actor", sequence, payload_of(sequence))
    log.close()
    again = [r.sequence for r in TransitionLog(tmp_path, segment_bytes=1200).records()]
    assert again == list(range(TOTAL))


def test_fsync_batch_latency(tmp_path):
    """Measured figure: one sync of 64 records of 2 kB (state transitions are ~200 B)."""
    log = TransitionLog(tmp_path, sync_every=64)
    payload = os.urandom(2048)
    times = []
    for batch in range(50):
        for i in range(64):
            log.append("a", batch * 64 + i, payload)
        started = time.perf_counter()
        log.sync()
        times.append(time.perf_counter() - started)
    log.close()
    times.sort()
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99) - 1]
    print(f"\nfsync batch of 64 x 2 kB: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
    assert p50 < 0.5, "an fsync batch should take milliseconds, not seconds"


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "child":
    _child(sys.argv[2], sys.argv[3], sys.argv[4])
