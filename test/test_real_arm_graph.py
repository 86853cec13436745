"""train robot:=real end to end on an emulated arm: the arm driver in place of the MuJoCo
bridge, talking through the real SDK to a servo emulator on a pty, with the intervention mux,
safety limiter, actor and learner of the train composition. Nothing learns here (no reward on
an emulated arm); what is checked is that the graph runs on the driver: episodes reset by
homing, commands reach the motors, every transition reaches the learner once, and Ctrl-C leaves
every motor torque-off."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilserl_testing import Output, isolated_environment, wait_for

pytest.importorskip("dynamixel_sdk")
ROOT = Path(__file__).resolve().parent.parent


def test_train_runs_on_an_emulated_koch_arm(ros_domain_id, tmp_path):
    from hilserl_drivers.arms import KOCH, dry_run_calibration
    from hilserl_drivers.bus_emulator import DynamixelEmulator

    calibration = tmp_path / "koch.yaml"
    dry_run_calibration(KOCH).save(calibration)
    params = tmp_path / "params.yaml"
    params.write_text(
        "arm_driver:\n  ros__parameters:\n    packet_timeout_s: 0.05\n    report_period_s: 2.0\n"
        f"actor:\n  ros__parameters:\n    results_dir: {tmp_path / 'results'}\n    max_episode_steps: 40\n"
        f"learner:\n  ros__parameters:\n    checkpoint_dir: {tmp_path / 'checkpoints'}\n    tensorboard_dir: ''\n"
        "    report_period_s: 2.0\n")
    with DynamixelEmulator(KOCH.ids, "xl330", speed=3000.0) as emulator:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "launch" / "runner.py"), "--params-file", str(params), "train", "robot:=real",
             "arm:=koch", f"port:={emulator.port}", f"calibration:={calibration}", f"domain_id:={ros_domain_id}"],
            env=isolated_environment(ros_domain_id), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        out = Output(proc)
        try:
            # two episodes of 40 steps: the second began with a reset that homed the arm again
            assert wait_for(lambda: out.find(r"\[actor\].* ([3-9]|\d\d+) episodes"), 150.0), out.tail(60)
            assert [emulator.motor(i).read_register("Torque Enable") for i in KOCH.ids] == [1] * 6
            time.sleep(2.5)  # one more progress line of each
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=60.0) == 0, out.tail(60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert [emulator.motor(i).read_register("Torque Enable") for i in KOCH.ids] == [0] * 6
    driver = [tuple(int(v) for v in m.groups()) for m in out.find(
        r"\[arm_driver\].* (\d+) ticks, (\d+) frames, missed deadlines (\d+) .* (\d+) commands")]
    learner = [tuple(int(v) for v in m.groups()) for m in out.find(r"\[learner\].*steps (\d+) .*dup (\d+) gaps (\d+)")]
    assert driver and learner, out.tail(60)
    ticks, frames, missed, commands = driver[-1]
    steps, dup, gaps = learner[-1]
    print(f"driver: {ticks} ticks, {frames} frames, {missed} missed, {commands} commands; learner: {steps} "
          f"transitions, dup {dup} gaps {gaps}")
    assert commands >= 60 and frames >= commands
    assert steps >= 60 and dup == 0 and gaps == 0
    assert out.find("stopped: torque off on every motor, port closed"), out.tail(60)
    assert not out.find(r"\[arm_driver\].*Traceback"), out.tail(60)
