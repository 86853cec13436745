"""The train graph on emulated real arms: missed control deadlines over a few minutes.

For each arm (default: so101 on a Feetech STS3215 emulator and koch on a Dynamixel XL330
emulator, both at once: two arms' worth of bus traffic and two graphs on this machine), this
starts ``python -m hilserl_drivers.bus_emulator`` on a pty, writes a dry-run calibration, and runs
``launch/runner.py train robot:=real arm:=<arm> port:=<pty>`` (driver, mux, safety limiter,
actor, learner) on its own ROS domain for ``--duration`` seconds, then stops it with SIGINT.

From the driver's last progress line: control ticks, frames published, missed deadlines (a tick
that overran its period, started more than half a period late, or whose read was stale: then no
frame), commands executed; from the learner's: transitions received, duplicates and gaps.
Target (issue 10): missed deadlines < 0.1 % of ticks. JSON to ``--out``.

What it measures and what not: the emulators answer through a pty from a Python thread, so a
sync read waits for the emulator process to be scheduled; on this 2-core machine, next to two
graphs, that scheduling is what a miss measures (a real 1 Mbaud bus answers in about 1 ms, see
bench/bus_tick.py). The policy learns nothing here: there is no reward on an emulated arm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = {"so101": ("feetech", "sts3215"), "koch": ("dynamixel", "xl330")}
DRIVER_LINE = re.compile(r"\[arm_driver\].*?(\d+) ticks, (\d+) frames, missed deadlines (\d+) .*?(\d+) overruns, "
                         r"(\d+) late, (\d+) stale reads\), (\d+) commands")
LEARNER_LINE = re.compile(r"\[learner\].*?steps (\d+) .*?dup (\d+) gaps (\d+)")


def start_emulator(arm: str, log: Path) -> tuple[subprocess.Popen, str]:
    protocol, model = EMULATOR[arm]
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "hilserl_drivers.bus_emulator", protocol, "--ids", "1", "2", "3",
                             "4", "5", "6", "--model", model], stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        found = re.search(r"/dev/pts/\d+", log.read_text())
        if found:
            return proc, found.group(0)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the {protocol} emulator printed no pty: {log.read_text()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=["so101", "koch"], choices=sorted(EMULATOR))
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of training per arm (concurrent)")
    parser.add_argument("--quick", action="store_true", help="30 s")
    parser.add_argument("--packet-timeout", type=float, default=0.05,
                        help="the driver's packet_timeout_s (default 0.02 on a real bus; an emulator answers "
                             "when this loaded machine schedules it)")
    parser.add_argument("--domain", type=int, default=180, help="ROS domain of the first arm (then +1, ...)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_arm_train.json")
    args = parser.parse_args(argv)
    duration = 30.0 if args.quick else args.duration
    work = Path(tempfile.mkdtemp(prefix="real_arm_train_"))
    from hilserl_drivers.arms import ARMS, dry_run_calibration

    emulators, runs = [], []
    try:
        for index, arm in enumerate(args.arms):
            emulator, port = start_emulator(arm, work / f"{arm}_emulator.log")
            emulators.append(emulator)
            calibration = work / f"{arm}_calibration.yaml"
            dry_run_calibration(ARMS[arm]).save(calibration)
            params = work / f"{arm}_params.yaml"
            params.write_text(
                f"arm_driver:\n  ros__parameters:\n    packet_timeout_s: {args.packet_timeout}\n"
                f"    report_period_s: 5.0\n"
                f"actor:\n  ros__parameters:\n    results_dir: {work / arm / 'results'}\n"
                f"learner:\n  ros__parameters:\n    checkpoint_dir: {work / arm / 'checkpoints'}\n"
                f"    tensorboard_dir: ''\n")
            domain = args.domain + index
            log = work / f"{arm}_train.log"
            env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "launch" / "runner.py"), "--params-file", str(params), "train",
                 "robot:=real", f"arm:={arm}", f"port:={port}", f"calibration:={calibration}",
                 f"domain_id:={domain}"], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
            runs.append((arm, port, proc, log))
            print(f"{arm}: emulator on {port}, train graph on domain {domain}, log {log}", flush=True)
        start = time.monotonic()
        while time.monotonic() - start < duration:
            time.sleep(min(10.0, duration - (time.monotonic() - start)))
            for arm, _, proc, log in runs:
                lines = DRIVER_LINE.findall(log.read_text())
                if proc.poll() is not None:
                    raise RuntimeError(f"{arm}: the train graph exited early ({proc.returncode}); see {log}")
                if lines:
                    ticks, _, missed = (int(v) for v in lines[-1][:3])
                    print(f"  {time.monotonic() - start:5.0f} s  {arm}: {ticks} ticks, {missed} missed", flush=True)
        for _, _, proc, _ in runs:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=60.0) for _, _, proc, _ in runs]
    finally:
        for _, _, proc, _ in runs:
            if proc.poll() is None:
                proc.kill()
        for emulator in emulators:
            emulator.send_signal(signal.SIGINT)
            emulator.wait(timeout=10.0)

    results = []
    for (arm, port, _, log), code in zip(runs, codes):
        text = log.read_text()
        driver = DRIVER_LINE.findall(text)
        learner = LEARNER_LINE.findall(text)
        if not driver or not learner:
            raise RuntimeError(f"{arm}: no progress lines in {log}")
        ticks, frames, missed, overruns, late, stale, commands = (int(v) for v in driver[-1])
        steps, dup, gaps = (int(v) for v in learner[-1])
        results.append({
            "arm": arm, "bus": EMULATOR[arm][0], "model": EMULATOR[arm][1], "exit_code": code,
            "ticks": ticks, "frames": frames, "missed_deadlines": missed, "overruns": overruns, "late_ticks": late,
            "stale_reads": stale,
            "missed_percent": round(100.0 * missed / max(ticks, 1), 3), "commands": commands,
            "learner_transitions": steps, "duplicates": dup, "gaps": gaps,
            "torque_off_at_exit": "stopped: torque off on every motor, port closed" in text,
            "target_met": missed / max(ticks, 1) < 0.001,
        })
        print(f"{arm}: {ticks} ticks, {frames} frames, {missed} missed ({results[-1]['missed_percent']} %: "
              f"{overruns} overruns, {late} late, {stale} stale), {commands} commands; learner {steps} transitions, dup {dup} "
              f"gaps {gaps}; exit {code}")
    report = {"bench": "real_arm_train", "duration_s": duration, "packet_timeout_s": args.packet_timeout,
              "control_rate_hz": 10.0, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                  "platform": platform.platform()},
              "arms": results, "logs": str(work)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
