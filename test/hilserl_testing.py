"""Test helpers shared by every package's tests (ROS ones import rclpy lazily).

- `wait_for(predicate, timeout)`: poll on a monotonic clock.
- `DomainLease`: a ROS_DOMAIN_ID no other process on this machine holds, taken
  with an exclusive file lock, so concurrent test runs never share a graph.
- `RosHarness`: a private rclpy Context on a leased domain, with an executor
  spinning in a daemon thread.
- `run_composition(domain_id, params, *arguments)`: launch/runner.py to its end on the
  test's domain (exit code 0 asserted); its `Output` lines.
- `write_video(path)`: a small video file (OpenCV) that stands in for a camera.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

LOCK_DIR = Path(tempfile.gettempdir()) / "hilserl-ros-domains"
# 0 is everyone's default; keep clear of it. 1..100 fit the default port mapping.
DOMAIN_IDS = range(1, 101)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    """True as soon as predicate() is truthy, False once timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class DomainLease:
    """Holds an exclusive lock on one domain id until released (or the process dies)."""

    def __init__(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        ids = list(DOMAIN_IDS)
        random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(ids)
        for domain_id in ids:
            fd = os.open(LOCK_DIR / f"{domain_id}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.domain_id, self._fd = domain_id, fd
            return
        raise RuntimeError(f"all ROS domain ids {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1} are leased "
                           f"(locks in {LOCK_DIR})")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DomainLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def isolated_environment(domain_id: int) -> dict[str, str]:
    """os.environ for a child process that must stay on its own graph."""
    return dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")


class RosHarness:
    """A private rclpy Context on its own domain, spun by a background executor."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.domain_id = domain_id
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        # Single-threaded: a MultiThreadedExecutor in one Python process on this 2-core VM took
        # 70-1500 ms per publish/subscribe round trip (GIL hand-offs between its pool threads on
        # two CPUs; pinned to one CPU, or single-threaded: 0.6 ms), which stalled the R2 test
        # for seconds per command and slowed every test with an in-process graph.
        self.executor = SingleThreadedExecutor(context=self.context)
        self._nodes = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except (ExternalShutdownException, RuntimeError):
            pass

    def node(self, name: str, **kwargs):
        """A new node in this context, already spinning."""
        import rclpy

        node = rclpy.create_node(name, context=self.context, **kwargs)
        return self.add(node)

    def add(self, node):
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def shutdown(self) -> None:
        import rclpy

        for node in self._nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
        self.executor.shutdown()


class Output:
    """Collects a process's output lines in a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")),
                                        daemon=True)
        self._thread.start()

    def find(self, pattern: str) -> list[re.Match]:
        return [m for m in (re.search(pattern, line) for line in list(self.lines)) if m]

    def tail(self, n: int = 40) -> str:
        return "".join(self.lines[-n:])


def run_composition(domain_id: int, params: Path, *arguments: str, timeout: float = 300.0) -> Output:
    """Run ``runner.py --params-file params <arguments> domain_id:=...`` to its end; exit code 0 asserted."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, str(root / "launch" / "runner.py"), "--params-file", str(params),
                             *arguments, f"domain_id:={domain_id}"],
                            env=isolated_environment(domain_id), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = Output(proc)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == 0, out.tail()
    return out


RED_STEP = 20  # frame i of write_video's video has red = RED_STEP * i


def write_video(path, frames: int = 10, size=(48, 64)) -> None:
    """An MJPG AVI (OpenCV) whose frame i is uniformly red = 20 i, green 100, blue 200."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size[1], size[0]))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for i in range(frames):
        frame = np.empty(size + (3,), np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2] = 200, 100, RED_STEP * i  # B, G, R
        writer.write(frame)
    writer.release()


CLASSIFIER_IMAGE_SIZE = 32


def separable_frames(count: int, seed: int):
    """Two-camera frames for reward-classifier tests: noisy grey images; a success frame has a
    bright cube in the upper half of the "front" camera, a failure frame has it in the lower
    half (the wrist camera shows noise only). Returns ({camera: (N, 32, 32, 3) uint8}, labels)."""
    import numpy as np

    size = CLASSIFIER_IMAGE_SIZE
    rng = np.random.default_rng(seed)
    labels = rng.random(count) < 0.25  # positives are the rare class
    front = rng.integers(40, 90, (count, size, size, 3), dtype=np.uint8)
    wrist = rng.integers(40, 90, (count, size, size, 3), dtype=np.uint8)
    for i, success in enumerate(labels):
        y = rng.integers(2, size // 2 - 8) if success else rng.integers(size // 2, size - 8)
        x = rng.integers(2, size - 8)
        front[i, y:y + 6, x:x + 6] = (230, 60, 60)
    return {"front": front, "wrist": wrist}, labels


def classifier_test_config(**kw):
    """A small two-camera ClassifierConfig for separable_frames."""
    from hilserl_policy.config import EncoderConfig
    from hilserl_policy.reward_classifier import ClassifierConfig

    encoder = EncoderConfig(small_cnn_channels=(16, 16), image_latent_dim=32, random_shift_pad=2)
    return ClassifierConfig(camera_names=("front", "wrist"), image_size=CLASSIFIER_IMAGE_SIZE,
                            encoder=encoder, hidden_dim=32, **kw)


def home_real_arm(arm, ticks: int = 200) -> int:
    """Torque a ``hilserl_drivers.real_arm.RealArm`` on where it stands and home it, a tick every
    10 ms (emulated servos); returns the ticks it took."""
    arm.read()
    arm.hold_here()
    arm.bus.set_torque(True)
    for tick in range(ticks):
        time.sleep(0.01)
        arm.read()
        if arm.home_step():
            return tick
    raise AssertionError(f"not homed after {ticks} ticks: {arm.last.position.round(3).tolist()}")
