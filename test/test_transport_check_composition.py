"""End to end: the transport-check composition starts, moves data, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from hilserl_testing import isolated_environment, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_train_composition_streams_acknowledged_transitions_and_stops_on_sigint(ros_domain_id):
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "runner.py"), "transport_check",
                             f"domain_id:={ros_domain_id}"], env=isolated_environment(ros_domain_id),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    # What matters: nothing stored twice (distinct stored = contiguous frontier + 1) and nothing
    # missing. A start-up resend may deliver a transition twice; it is dropped, not stored.
    pattern = re.compile(r"\[learner\] .*actor actor_0: stored (\d+) distinct transitions .*"
                         r"contiguous up to (\d+), missing 0, duplicates dropped (\d+)")

    def progress():
        found = [pattern.search(line) for line in list(lines)]
        found = [m for m in found if m]
        acked = [re.search(r"\[actor\] .*acknowledged up to (\d+)", line) for line in list(lines)]
        acked = [int(m.group(1)) for m in acked if m]
        return (found and int(found[-1].group(2)) >= 30 and int(found[-1].group(1)) == int(found[-1].group(2)) + 1
                and acked and acked[-1] >= 30)

    try:
        assert wait_for(progress, 40.0), "no acknowledged progress:\n" + "".join(lines[-30:])
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) >= 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, "".join(lines[-30:])
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    assert wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                    for p in children), 5.0), "a node outlived the runner"
