#!/usr/bin/env python3
"""Lock-step simulation speed: env steps per second, in-process and through ROS 2.

    source env.sh
    python bench/sim_speed.py --out sim_speed.json           # full run (a few minutes)
    python bench/sim_speed.py --quick --out sim_speed.json   # under a minute

Cases (Panda pick-cube scene, random normalised commands, a reset at each episode end):

- inproc_state: ``PickCubeBridge.step`` in this process, state only;
- inproc_2cam: the same with the front and wrist cameras rendered at 128x128;
- ros_state: the bridge node in its own process (``mode:=lockstep``), a client node here
  publishes a command and waits for the reward of that step (stamp not older than the
  command) over DDS on loopback; state only;
- ros_2cam: the same, also waiting for both camera images of that step.

Writes ``{"results": {case: {"steps_per_second": ..., "steps": ..., "seconds": ..., "target": ...}}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"inproc_state": 500.0, "ros_state": 200.0, "inproc_2cam": 30.0, "ros_2cam": 30.0}
CAMERAS = ("front", "wrist")


def bench_inproc(cameras, steps: int, warmup: int = 20) -> dict:
    from hilserl_sim.frame import PickCubeBridge
    from hilserl_sim.pick_cube import PickCubeConfig

    env = PickCubeBridge(PickCubeConfig(arm="panda"), cameras=cameras)
    rng = np.random.default_rng(0)
    try:
        env.reset(seed=0)
        for _ in range(warmup):
            env.step(rng.uniform(-1, 1, 6), 0)
        start = time.perf_counter()
        for i in range(steps):
            frame = env.step(rng.uniform(-1, 1, 6), int(rng.integers(-1, 2)))
            if frame.terminated or frame.truncated:
                env.reset(seed=i)
        seconds = time.perf_counter() - start
    finally:
        env.close()
    return {"steps": steps, "seconds": seconds, "steps_per_second": steps / seconds}


def _lease_domain():
    sys.path.insert(0, str(ROOT / "test"))
    try:
        from hilserl_testing import DomainLease
    except ImportError:
        return None, int(os.environ.get("ROS_DOMAIN_ID", "0"))
    lease = DomainLease()
    return lease, lease.domain_id


def bench_ros(cameras, steps: int, warmup: int = 20) -> dict:
    import rclpy
    from hilserl_msgs.msg import Action, Reward, Topics
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    lease, domain_id = _lease_domain()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    camera_list = "[" + ",".join(cameras) + "]"
    bridge = subprocess.Popen(
        [sys.executable, "-m", "hilserl_sim.sim_bridge_node", "--ros-args", "-p", "mode:=lockstep",
         "-p", f"cameras:={camera_list}", "-p", "seed:=0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("sim_speed_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    latest = {"reward": 0}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

    def keep(key):
        def callback(msg):
            latest[key] = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return callback

    node.create_subscription(Reward, Topics.REWARD, keep("reward"), reliable)
    for name in cameras:
        latest[name] = 0
        node.create_subscription(Image, Topics.CAMERA_RAW.format(name=name), keep(name), qos_profile_sensor_data)
    publisher = node.create_publisher(Action, Topics.COMMAND, reliable)
    rng = np.random.default_rng(0)
    lost = 0

    def one_step() -> bool:
        msg = Action()
        msg.header.stamp = node.get_clock().now().to_msg()
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        msg.linear.x, msg.linear.y, msg.linear.z = (float(v) for v in rng.uniform(-1, 1, 3))
        msg.gripper = int(rng.integers(-1, 2))
        publisher.publish(msg)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if all(stamp >= sent for stamp in latest.values()):
                return True
            executor.spin_once(timeout_sec=0.1)
        return False  # a best-effort image was dropped: counted, the run goes on

    try:
        deadline = time.monotonic() + 60.0
        while publisher.get_subscription_count() == 0 or node.count_publishers(Topics.REWARD) == 0:
            if time.monotonic() > deadline or bridge.poll() is not None:
                raise RuntimeError("the bridge node did not come up")
            executor.spin_once(timeout_sec=0.1)
        for _ in range(warmup):
            one_step()
        start = time.perf_counter()
        for _ in range(steps):
            lost += not one_step()
        seconds = time.perf_counter() - start
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        bridge.send_signal(2)
        try:
            bridge.wait(timeout=10)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait()
        if lease is not None:
            lease.release()
    return {"steps": steps, "seconds": seconds, "steps_per_second": steps / seconds, "steps_timed_out": lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="fewer steps: under a minute in all")
    parser.add_argument("--only", nargs="*", choices=sorted(TARGETS), help="run only these cases")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    counts = ({"inproc_state": 1000, "ros_state": 500, "inproc_2cam": 150, "ros_2cam": 150} if args.quick
              else {"inproc_state": 5000, "ros_state": 3000, "inproc_2cam": 1000, "ros_2cam": 1000})
    cases = {
        "inproc_state": lambda n: bench_inproc((), n),
        "ros_state": lambda n: bench_ros((), n),
        "inproc_2cam": lambda n: bench_inproc(CAMERAS, n),
        "ros_2cam": lambda n: bench_ros(CAMERAS, n),
    }
    results = {}
    for name, run in cases.items():
        if args.only and name not in args.only:
            continue
        result = run(counts[name])
        result["target"] = TARGETS[name]
        result["meets_target"] = result["steps_per_second"] >= TARGETS[name]
        results[name] = result
        print(f"{name:13s} {result['steps_per_second']:8.1f} steps/s  (target >= {TARGETS[name]:.0f})", flush=True)
    report = {
        "results": results,
        "scene": "panda pick-cube, 128x128 images, physics 4 ms, control 100 ms",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "mujoco_gl": os.environ.get("MUJOCO_GL")},
        "quick": args.quick,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    threading.current_thread().name = "main"
    main()
