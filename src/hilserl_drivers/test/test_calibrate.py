"""The guided calibration on the real SDKs, against the servo emulators over their ptys.

The test's prompt function is the person: at the "middle" step it moves the emulated
motors (``set_present_position``, torque off) to MIDDLE; at the "range" step it moves
them to LOW, waits until the procedure's sampler has read that, then through MIDDLE to
HIGH (a hand does not jump half a turn between two samples, which the procedure takes
for the encoder's seam), waiting at each, and back to MIDDLE before "pressing Enter".
Waiting is on the emulator's packet count: a sync read received after a move carries
the new position, and the next one is only sent once the sampler has recorded it, so
two packets after a move prove the sample was taken (no sleeps to tune).
"""

from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from hilserl_drivers.bus_emulator import DynamixelEmulator, FeetechEmulator
from hilserl_drivers.calibrate import MIDDLE_PROMPT, RANGE_PROMPT, main, run_calibration, write_calibration
from hilserl_drivers.motor_bus import ArmCalibration, CalibrationError, MotorBusError, make_bus

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("scservo_sdk")

IDS = [1, 2, 3, 4, 5, 6]
NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
DIRECTIONS = [1, 1, -1, 1, -1, 1]
MIDDLE = [2000, 2100, 1900, 2200, 2048, 1500]
LOW = [1200, 1400, 1000, 1600, 548, 1200]
HIGH = [2700, 2900, 2800, 2800, 3548, 2400]
RAD_PER_TICK = 2 * math.pi / 4096
TIMEOUT_S = 0.5  # generous: only a missing motor waits for it, and a loaded machine may be slow to answer
CLI_TIMEOUT = ["--packet-timeout", str(TIMEOUT_S)]
RIGS = {"xl330": DynamixelEmulator, "sts3215": FeetechEmulator}


def move(emulator, ticks) -> None:
    for motor_id, tick in zip(IDS, ticks):
        emulator.motor(motor_id).set_present_position(tick)


def move_and_wait_for_a_sample(emulator, ticks, timeout: float = 3.0) -> None:
    """Move the motors, then wait until two more packets reached the bus (see the module docstring)."""
    move(emulator, ticks)
    seen = emulator.stats.packets
    deadline = time.monotonic() + timeout
    while emulator.stats.packets < seen + 2:
        assert time.monotonic() < deadline, "the sampler did not read the bus"
        time.sleep(0.002)


def person(emulator, sweeps=(LOW, MIDDLE, HIGH)):
    """A prompt function that moves the emulated arm as the step asks; records the prompts."""
    prompts = []

    def prompt(text: str) -> str:
        prompts.append(text)
        if text == MIDDLE_PROMPT:
            move(emulator, MIDDLE)
        elif text == RANGE_PROMPT:
            for ticks in sweeps:
                move_and_wait_for_a_sample(emulator, ticks)
            move(emulator, MIDDLE)  # no wait: the procedure reads once more after Enter
        else:
            raise AssertionError(f"unexpected prompt {text!r}")
        return ""

    prompt.prompts = prompts
    return prompt


def factory(emulator, made=None):
    def build(calibration):
        bus = make_bus(emulator.port, calibration, packet_timeout_s=TIMEOUT_S)
        if made is not None:
            made.append(bus)
        return bus
    return build


@pytest.mark.parametrize("model", list(RIGS))
def test_full_procedure_offsets_ranges_directions(tmp_path, model):
    with RIGS[model](IDS, model) as emulator:
        for motor in emulator.motors:
            motor.write_register("Torque Enable", 1)  # the procedure must turn it off before the hand moves
        made = []
        prompt = person(emulator)
        calibration = run_calibration(factory(emulator, made), model, IDS, NAMES, prompt, directions=DIRECTIONS)
        assert prompt.prompts == [MIDDLE_PROMPT, RANGE_PROMPT]
        assert [m.read_register("Torque Enable") for m in emulator.motors] == [0] * 6
        assert not made[0].connected  # port closed
        path = tmp_path / "arm_calibration.yaml"
        write_calibration(calibration, str(path))
        loaded = ArmCalibration.load(path)
        assert loaded == calibration
        assert loaded.model == {"xl330": "xl330-m288", "sts3215": "sts3215"}[model]
        assert list(loaded.names) == NAMES and list(loaded.ids) == IDS
        assert [j.homing_offset for j in loaded.joints] == MIDDLE
        assert [j.min_ticks for j in loaded.joints] == LOW
        assert [j.max_ticks for j in loaded.joints] == HIGH
        assert [j.direction for j in loaded.joints] == DIRECTIONS
        assert yaml.safe_load(path.read_text())["joints"][2] == {
            "name": "elbow_flex", "id": 3, "homing_offset": 1900, "direction": -1, "min_ticks": 1000, "max_ticks": 2800}
        # The bus on the saved calibration reads 0 rad at the middle, and the right sign off it.
        with make_bus(emulator.port, loaded, packet_timeout_s=TIMEOUT_S) as bus:
            np.testing.assert_allclose(bus.read_state().position, 0.0, atol=1e-12)
            move(emulator, [m + 100 for m in MIDDLE])
            np.testing.assert_allclose(bus.read_state().position, np.array(DIRECTIONS) * 100 * RAD_PER_TICK)
            # Goals are clipped to the recorded range.
            bus.set_torque(True)
            assert bus.write_goals(np.full(6, 10.0)).tolist() == [
                HIGH[i] if d > 0 else LOW[i] for i, d in enumerate(DIRECTIONS)]


def test_wrong_model_refused_naming_the_motor_and_its_model():
    with DynamixelEmulator(IDS, "xl430") as emulator:
        prompt = person(emulator)
        with pytest.raises(MotorBusError, match=r"motor 1 \(joint 'shoulder_pan'\): model number 1060 "
                                                r"\(xl430-w250\), configured xl330-m288 \(1200\)"):
            run_calibration(factory(emulator), "xl330", IDS, NAMES, prompt)
        assert prompt.prompts == []  # refused before asking anything


def test_missing_motor_refused_naming_it():
    with FeetechEmulator(IDS[:5], "sts3215") as emulator:
        prompt = person(emulator)
        with pytest.raises(MotorBusError, match=r"motor 6 \(joint 'gripper'\): no answer to ping") as info:
            run_calibration(factory(emulator), "sts3215", IDS, NAMES, prompt)
        assert "motor 5" not in str(info.value)
        assert prompt.prompts == []


def test_joint_not_moved_refused_naming_it_and_nothing_written(tmp_path, capsys):
    low, high = list(LOW), list(HIGH)
    low[2], high[2] = MIDDLE[2] - 35, MIDDLE[2]  # elbow_flex: 35 ticks = 3.1 degrees
    out = tmp_path / "arm.yaml"
    with DynamixelEmulator(IDS, "xl330") as emulator:
        rc = main(["--arm", "koch", "--port", emulator.port, "--out", str(out), *CLI_TIMEOUT],
                  prompt=person(emulator, sweeps=(low, MIDDLE, high)))
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == "calibrate: error: joint 'elbow_flex' moved only 3.1°; move it through its whole range"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_motor_missing_some_samples_does_not_end_the_procedure():
    with FeetechEmulator(IDS, "sts3215") as emulator:
        def prompt(text):
            if text == MIDDLE_PROMPT:
                move(emulator, MIDDLE)
                return
            move_and_wait_for_a_sample(emulator, LOW)
            emulator.set_fault("no_reply", ids=3)  # elbow_flex stops answering (the others go on)...
            move_and_wait_for_a_sample(emulator, [*LOW[:2], 100, *LOW[3:]])  # ...while it is at 100: not seen
            emulator.motor(3).set_present_position(LOW[2])
            emulator.clear_faults()
            for ticks in (MIDDLE, HIGH):
                move_and_wait_for_a_sample(emulator, ticks)

        calibration = run_calibration(
            lambda cal: make_bus(emulator.port, cal, packet_timeout_s=TIMEOUT_S, read_tries=1, max_missed_reads=1000),
            "sts3215", IDS, NAMES, prompt)
    assert [(j.min_ticks, j.max_ticks) for j in calibration.joints] == list(zip(LOW, HIGH))


def test_range_across_the_encoder_seam_refused():
    low, high = list(LOW), list(HIGH)
    low[4], high[4] = 50, 4050  # wrist_roll jumps from 50 to 4050: it went through 0/4095
    with FeetechEmulator(IDS, "sts3215") as emulator:
        with pytest.raises(CalibrationError, match=r"joint 'wrist_roll' crossed the encoder's 0/4095 seam") as info:
            run_calibration(factory(emulator), "sts3215", IDS, NAMES, person(emulator, sweeps=(low, high)))
        assert "elbow_flex" not in str(info.value)


def test_existing_file_not_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "arm.yaml"
    out.write_text("keep me\n")
    with DynamixelEmulator(IDS, "xl330") as emulator:
        rc = main(["--arm", "koch", "--port", emulator.port, "--out", str(out)], prompt=person(emulator))
        assert emulator.stats.packets == 0  # refused before the port was touched
    assert rc == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    calibration = ArmCalibration.load(_any_calibration(tmp_path))
    with pytest.raises(FileExistsError, match="pass --force"):
        write_calibration(calibration, str(out))  # the write itself refuses too (a file that appeared meanwhile)
    assert out.read_text() == "keep me\n"
    write_calibration(calibration, str(out), force=True)
    assert ArmCalibration.load(out) == calibration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm.yaml", "other.yaml"]  # no temporary left


def _any_calibration(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump({"model": "xl330", "joints": [
        {"name": n, "id": i, "homing_offset": 2048, "direction": 1, "min_ticks": 1000, "max_ticks": 3000}
        for n, i in zip(NAMES, IDS)]}))
    return path


def test_ctrl_c_closes_the_port_and_writes_nothing(tmp_path, capsys):
    def interrupt_at_range(text):
        if text == RANGE_PROMPT:
            raise KeyboardInterrupt

    with FeetechEmulator(IDS, "sts3215") as emulator:
        made = []
        with pytest.raises(KeyboardInterrupt):
            run_calibration(factory(emulator, made), "sts3215", IDS, NAMES, interrupt_at_range)
        assert not made[0].connected
        assert not any(t.name == "calibration-sampler" for t in threading.enumerate())
        out = tmp_path / "arm.yaml"
        assert main(["--arm", "so101", "--port", emulator.port, "--out", str(out), *CLI_TIMEOUT],
                    prompt=interrupt_at_range) == 130
    assert "interrupted; nothing written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_refused():
    with pytest.raises(SystemExit) as info:
        main(["--bus", "dynamixel", "--model", "sts3215", "--ids", "1", "--names", "a", "--port", "x", "--out", "y"])
    assert info.value.code == 2
    with pytest.raises(ValueError, match="6 motor IDs .* need as many names"):
        run_calibration(lambda cal: None, "xl330", IDS, NAMES[:5], print)
    with pytest.raises(CalibrationError, match="joint 'elbow_flex': direction must be 1 or -1, got 2"):
        run_calibration(lambda cal: None, "xl330", IDS, NAMES, print, directions=[1, 1, 2, 1, 1, 1])


# ------------------------------------------------------------------ command line
def _start_cli(args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))  # the modules this test imported
    process = subprocess.Popen([sys.executable, "-m", "hilserl_drivers.calibrate", *args, *CLI_TIMEOUT], env=env,
                               text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return process, lines


def _wait_for_line(process, lines, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            process.kill()
            raise AssertionError(f"no {text!r} line from the CLI; stderr: {process.stderr.read()}") from None
        if text in line:
            return


def test_cli_end_to_end_with_stdin(tmp_path):
    out = tmp_path / "arm_calibration.yaml"
    out.write_text("old\n")
    with FeetechEmulator(IDS, "sts3215") as emulator:
        move(emulator, MIDDLE)
        process, lines = _start_cli(["--arm", "so101", "--port", emulator.port, "--out", str(out), "--force",
                                     "--directions", *map(str, DIRECTIONS)])
        try:
            _wait_for_line(process, lines, MIDDLE_PROMPT)
            process.stdin.write("\n")
            process.stdin.flush()
            _wait_for_line(process, lines, RANGE_PROMPT)
            for ticks in (LOW, MIDDLE, HIGH):
                move_and_wait_for_a_sample(emulator, ticks, timeout=10.0)
            move(emulator, MIDDLE)
            process.stdin.write("\n")
            process.stdin.flush()
            assert process.wait(timeout=10) == 0, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    loaded = ArmCalibration.load(out)
    assert loaded.model == "sts3215" and list(loaded.names) == NAMES
    assert [j.homing_offset for j in loaded.joints] == MIDDLE
    assert [(j.min_ticks, j.max_ticks) for j in loaded.joints] == list(zip(LOW, HIGH))
    assert [j.direction for j in loaded.joints] == DIRECTIONS


def test_cli_sigint_writes_nothing(tmp_path):
    out = tmp_path / "arm_calibration.yaml"
    with DynamixelEmulator(IDS, "xl330") as emulator:
        process, lines = _start_cli(["--arm", "koch", "--port", emulator.port, "--out", str(out)])
        try:
            _wait_for_line(process, lines, MIDDLE_PROMPT)
            process.stdin.write("\n")
            process.stdin.flush()
            _wait_for_line(process, lines, RANGE_PROMPT)
            move_and_wait_for_a_sample(emulator, LOW, timeout=10.0)  # sampling
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 130
            assert "interrupted; nothing written" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert list(tmp_path.iterdir()) == []
