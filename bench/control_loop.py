"""Control loop: observation-to-command latency and deadline misses through the real graph.

    python bench/control_loop.py --out FILE.json [--quick] [--duration S] [--rates 10,30]

The train composition's nodes (sim_bridge in realtime mode at each rate, intervention_mux,
safety_limiter, learner, actor; no simulated human) run as separate processes on a private
ROS_DOMAIN_ID (101..232, localhost discovery). The learner trains (``pacing: free``) and
pushes weights while the loop runs, as in real use; the actor is not paced.

A probe node in this process subscribes to ``hilserl/reward`` (the last message of a
frame; its header stamp is the frame time, taken by the bridge on this machine's clock)
and ``hilserl/command`` (stamped with the frame stamp it answers):

- latency  = the command's arrival at the probe (the DDS reception time) - the frame stamp;
- a deadline miss = a frame whose command did not arrive within one period (1 / rate)
  of its stamp, or never.

Frames between an episode's end and the first step of the next (the actor is resetting
the scene and does not act, by design) are counted apart (``reset_frames``), not as misses.

Weight push: a real ``PolicyParams`` of the learner's default network (an ``RLPDAgent``
from config/learner.yaml, exported by ``export_policy``) published TRANSIENT_LOCAL by a
child process and received here: delivery = callback entry - the moment before
``publish()``; DDS = reception - source timestamp; load = ``InferencePolicy.from_bytes``.

Targets (issue 8): p99 <= 10 ms for a state policy; misses < 0.1 %.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "launch"))

import hilserl_composition as hc  # noqa: E402
from runner import find_executable  # noqa: E402

TARGET_P99_MS = 10.0
TARGET_MISS_RATE = 0.001
DOMAIN_IDS = range(101, 233)  # tests lease 1..100
LOCK_DIR = Path(tempfile.gettempdir()) / "hilserl-ros-domains"
GRAPH_NODES = ("sim_bridge", "intervention_mux", "safety_limiter", "learner", "actor")
PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------ machine
class DomainLease:
    """An exclusive lock on one ROS_DOMAIN_ID of 101..232 (same lock folder as the tests)."""

    def __init__(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for domain_id in DOMAIN_IDS:
            fd = os.open(LOCK_DIR / f"{domain_id}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.domain_id, self._fd = domain_id, fd
            return
        raise RuntimeError(f"all ROS domain ids {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1} are leased ({LOCK_DIR})")

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def child_environment(domain_id: int) -> dict[str, str]:
    return dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONUNBUFFERED="1")


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def machine_busy() -> tuple[float, float]:
    """(busy CPU-seconds, total CPU-seconds) of the whole machine since boot."""
    values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / ticks, sum(values) / ticks


def process_cpu_s(pid: int) -> float:
    """CPU-seconds (user + system) a process has used; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


# -------------------------------------------------------------------- graph
def record_demos(path: Path, episodes: int) -> None:
    subprocess.run([sys.executable, "-m", "hilserl_learner.record_expert_demos", "--out", str(path),
                    "--episodes", str(episodes), "--layout", "relative"], check=True, timeout=600)


def physics_timestep(rate_hz: float, largest_s: float = 0.004) -> float:
    """The largest MuJoCo timestep <= ``largest_s`` (config/sim_bridge.yaml's) dividing the control period."""
    period = 1.0 / rate_hz
    return period / math.ceil(period / largest_s - 1e-9)


def override_file(folder: Path, demo_file: Path, rate_hz: float, publish_every_updates: int | None = None) -> Path:
    """The train composition made realtime at ``rate_hz``: actor unpaced, learner free-running.

    ``publish_every_updates``: the learner's (None: config/learner.yaml's, as in real use).
    """
    params = {
        "sim_bridge": {"ros__parameters": {"mode": "realtime", "control_rate_hz": float(rate_hz), "cameras": "",
                                           "physics_timestep": physics_timestep(rate_hz)}},
        "actor": {"ros__parameters": {"paced": False, "max_env_steps": 0, "eval_every_steps": 0,
                                      "max_episode_steps": 100000, "results_dir": ""}},
        "learner": {"ros__parameters": {"demo_file": str(demo_file), "checkpoint_dir": str(folder / "ckpt"),
                                        "tensorboard_dir": "", "pacing": "free", "checkpoint_on_exit": False}},
        # A realtime driver: stamps and poses are checked (config/hil.yaml), the watchdog logs silences.
        "safety_limiter": {"ros__parameters": {"max_command_age": 0.5, "pose_timeout": 0.5,
                                               "command_timeout": 0.2}},
    }
    if publish_every_updates is not None:
        params["learner"]["ros__parameters"]["publish_every_updates"] = int(publish_every_updates)
    path = folder / f"overrides_{rate_hz:g}hz.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def composition_parameter(node: str, name: str):
    """A node's parameter as the train composition's parameter files set it (None: the node's default)."""
    spec = next(n for n in hc.load_compositions()["train"].nodes if n.name == node)
    value = None
    for path in spec.parameter_files():
        params = (yaml.safe_load(path.read_text()) or {}).get(node, {}).get("ros__parameters", {})
        value = params.get(name, value)
    return value


class Graph:
    """The train composition's nodes (human:=none) as processes, output to log files."""

    def __init__(self, domain_id: int, params: Path, log_dir: Path) -> None:
        comp = hc.load_compositions()["train"]
        values = comp.resolve_arguments({"human": "none", "domain_id": str(domain_id)})
        self.env = dict(child_environment(domain_id), **comp.environment(values))
        self.specs = {n.name: hc.NodeSpec(**{**n.__dict__, "extra_parameter_files": (str(params),)})
                      for n in comp.selected_nodes(values)}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for name in GRAPH_NODES:
            spec = self.specs[name]
            with open(self.log_dir / f"{name}.log", "w") as log:
                self.procs[name] = subprocess.Popen(
                    [str(find_executable(spec.package, spec.executable)), *spec.ros_arguments()],
                    env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} during the run:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -------------------------------------------------------------------- probe
class Probe:
    """Frames, commands, episode statuses and weight pushes as seen on the graph."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from hilserl_msgs.msg import Action, EpisodeStatus, PolicyParams, Reward, Topics
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("control_loop_probe", context=self.context)
        reliable = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
        latest = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.lock = threading.Lock()
        self.frames: dict[int, int] = {}      # frame stamp -> arrival (ns, DDS reception time)
        self.commands: dict[int, int] = {}    # answered frame stamp -> first command arrival (ns)
        self.statuses: list[tuple[int, int, int, str]] = []  # (arrival ns, end_reason, step, detail)
        self.pushes: list[tuple[int, int]] = []  # (arrival ns, bytes on the wire)
        self.node.create_subscription(Reward, Topics.REWARD, self._on_reward, reliable)
        self.node.create_subscription(Action, Topics.COMMAND, self._on_command, reliable)
        # The stages in between, to say where the time goes.
        self.policy_actions: dict[int, int] = {}
        self.executed_actions: dict[int, int] = {}
        self.node.create_subscription(Action, Topics.POLICY_ACTION,
                                      lambda m, i: self._record(self.policy_actions, m, i), reliable)
        self.node.create_subscription(Action, Topics.EXECUTED_ACTION,
                                      lambda m, i: self._record(self.executed_actions, m, i), reliable)
        self.node.create_subscription(EpisodeStatus, Topics.EPISODE_STATUS, self._on_status, reliable)
        self.node.create_subscription(PolicyParams, Topics.POLICY_PARAMS, self._on_params, latest, raw=True)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except (ExternalShutdownException, RuntimeError):
            pass

    @staticmethod
    def _arrival(info) -> int:
        received = int(info.get("received_timestamp", 0)) if info else 0
        return received if received > 0 else time.time_ns()

    @staticmethod
    def _stamp(msg) -> int:
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    def _on_reward(self, msg, info) -> None:
        with self.lock:
            self.frames.setdefault(self._stamp(msg), self._arrival(info))

    def _on_command(self, msg, info) -> None:
        self._record(self.commands, msg, info)

    def _record(self, table: dict[int, int], msg, info) -> None:
        with self.lock:
            table.setdefault(self._stamp(msg), self._arrival(info))

    def _on_status(self, msg, info) -> None:
        with self.lock:
            self.statuses.append((self._arrival(info), int(msg.end_reason), int(msg.step), msg.detail))

    def _on_params(self, data: bytes, info) -> None:
        with self.lock:
            self.pushes.append((self._arrival(info), len(data)))

    def shutdown(self) -> None:
        import rclpy

        self.executor.remove_node(self.node)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
        self.executor.shutdown()


def reset_windows(statuses: list[tuple[int, int, int, str]], period_ns: int) -> list[tuple[int, int]]:
    """(from, to) times in which the actor ends an episode and resets the scene.

    From one period before the status that ends an episode (its last frame is answered by
    no command: the episode is over) to half a period after the status of the next
    episode's step 0 (the reset is done and the actor acts on the next frame).
    """
    from hilserl_msgs.msg import EpisodeStatus

    windows, start = [], None
    for arrival, end_reason, step, detail in statuses:
        if end_reason != EpisodeStatus.END_RUNNING and start is None:
            start = arrival - period_ns
        elif end_reason == EpisodeStatus.END_RUNNING and step == 0 and not detail and start is not None:
            windows.append((start, arrival + period_ns // 2))
            start = None
    if start is not None:
        windows.append((start, 1 << 62))
    return windows


PUSH_SHADOW_NS = 250_000_000  # after a weight push arrives, the actor loads it (tens to hundreds of ms)


def summarise(frames: dict[int, int], commands: dict[int, int], statuses, rate_hz: float,
              window: tuple[int, int], pushes: list[int] = ()) -> dict:
    """Latency percentiles and deadline misses of the frames stamped inside ``window``.

    ``pushes``: arrival times of PolicyParams; misses of frames stamped from one period
    before a push to PUSH_SHADOW_NS after it are also counted apart (``misses_near_push``)
    with the share of the window those stretches cover (``near_push_time_fraction``).
    """
    period_ns = int(round(1e9 / rate_hz))
    resets = reset_windows(statuses, period_ns)
    shadows = [(t - period_ns, t + PUSH_SHADOW_NS) for t in pushes if window[0] <= t < window[1]]
    near_push = 0
    latencies, misses, reset_frames, unanswered = [], 0, 0, 0
    stamps = sorted(s for s in frames if window[0] <= s < window[1])
    for stamp in stamps:
        arrival = commands.get(stamp)
        if arrival is None:
            if any(a <= stamp <= b for a, b in resets):
                reset_frames += 1
                continue
            unanswered += 1
            misses += 1
            near_push += any(a <= stamp <= b for a, b in shadows)
            continue
        latency = arrival - stamp
        latencies.append(latency / 1e6)
        if latency > period_ns:
            misses += 1
            near_push += any(a <= stamp <= b for a, b in shadows)
    control = len(stamps) - reset_frames
    lat = np.array(latencies) if latencies else np.array([np.nan])
    gaps = np.diff(np.array(stamps, dtype=np.int64)) / 1e6 if len(stamps) > 1 else np.array([np.nan])
    return {
        "frames": control,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                       "p99": float(np.percentile(lat, 99)), "max": float(np.max(lat)),
                       "mean": float(np.mean(lat))},
        "misses": misses,
        "miss_rate": misses / control if control else float("nan"),
        "unanswered": unanswered,
        "late": misses - unanswered,
        "reset_frames": reset_frames,
        "misses_near_push": near_push,
        "near_push_time_fraction": min(1.0, len(shadows) * (period_ns + PUSH_SHADOW_NS) / (window[1] - window[0])),
        "episodes_ended": sum(1 for a, b in resets if window[0] <= b and a < window[1]),
        "frame_period_ms": {"nominal": 1e3 / rate_hz, "p50": float(np.percentile(gaps, 50)),
                            "p99": float(np.percentile(gaps, 99)), "max": float(np.max(gaps))},
    }


def stage_latencies(stamps: list[int], policy: dict[int, int], executed: dict[int, int],
                    commands: dict[int, int]) -> dict:
    """Where the time goes, per answered frame: frame -> policy action (frame delivery to the
    actor + observation + inference), -> executed action (mux), -> command (limiter)."""
    parts: dict[str, list[float]] = {"actor": [], "mux": [], "limiter": []}
    for stamp in stamps:
        if stamp in policy and stamp in executed and stamp in commands:
            parts["actor"].append((policy[stamp] - stamp) / 1e6)
            parts["mux"].append((executed[stamp] - policy[stamp]) / 1e6)
            parts["limiter"].append((commands[stamp] - executed[stamp]) / 1e6)
    return {name: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                   "max": float(np.max(v))} for name, v in parts.items() if v}


def run_rate(rate_hz: float, duration_s: float, warmup_s: float, demo_file: Path, work: Path,
             publish_every_updates: int | None = None) -> dict:
    """Start the graph at ``rate_hz``, measure ``duration_s`` after the first command + warm-up."""
    folder = work / f"{rate_hz:g}hz"
    folder.mkdir(parents=True, exist_ok=True)
    lease = DomainLease()
    probe = graph = None
    try:
        graph = Graph(lease.domain_id, override_file(folder, demo_file, rate_hz, publish_every_updates), folder)
        probe = Probe(lease.domain_id)
        graph.start()
        started = time.monotonic()
        while not probe.commands:
            graph.check_alive()
            if time.monotonic() - started > 180.0:
                raise RuntimeError(f"no command on hilserl/command 180 s after start:\n{graph.tail('actor')}")
            time.sleep(0.1)
        up_s = time.monotonic() - started
        print(f"[{rate_hz:g} Hz] first command {up_s:.1f} s after start (domain {lease.domain_id}); "
              f"measuring {duration_s:g} s after {warmup_s:g} s warm-up", flush=True)
        time.sleep(warmup_s)
        pids = {name: proc.pid for name, proc in graph.procs.items()}
        cpu0 = {name: process_cpu_s(pid) for name, pid in pids.items()}
        busy0, total0 = machine_busy()
        load0 = os.getloadavg()
        t0 = time.time_ns()
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            graph.check_alive()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        t1 = time.time_ns()
        busy1, total1 = machine_busy()
        cpu = {name: (process_cpu_s(pid) - cpu0[name]) / duration_s for name, pid in pids.items()}
        load1 = os.getloadavg()
        time.sleep(max(1.0, 2.0 / rate_hz))  # commands of the last frames may still be on their way
        with probe.lock:
            frames, commands = dict(probe.frames), dict(probe.commands)
            statuses, pushes = list(probe.statuses), list(probe.pushes)
            policy, executed = dict(probe.policy_actions), dict(probe.executed_actions)
        result = summarise(frames, commands, statuses, rate_hz, (t0, t1), [t for t, _ in pushes])
        result["stage_ms"] = stage_latencies([s for s in frames if t0 <= s < t1], policy, executed, commands)
        in_window = [n for t, n in pushes if t0 <= t < t1]
        result["weight_pushes_received"] = len(in_window)
        result["load"] = {"loadavg_1min_start_end": [load0[0], load1[0]],
                          "machine_cpu_busy_fraction": (busy1 - busy0) / (total1 - total0),
                          "cpus": os.cpu_count(), "graph_cpu_cores": {k: round(v, 3) for k, v in cpu.items()}}
        result["duration_s"] = (t1 - t0) / 1e9
        result["startup_s"] = up_s
        return result
    finally:
        if graph is not None:
            graph.stop()
        if probe is not None:
            probe.shutdown()
        lease.release()


# ------------------------------------------------------------- weight push
def learner_default_agent():
    """An RLPDAgent of the learner's default configuration (node defaults + config/learner.yaml)."""
    from hilserl_learner.learner_node import PARAMETERS, _spec_and_config
    from hilserl_learner.rlpd import RLPDAgent

    p = {name: (default if not hasattr(default, "value") else None) for name, (default, _) in PARAMETERS.items()}
    p.update(yaml.safe_load((ROOT / "config" / "learner.yaml").read_text())["learner"]["ros__parameters"])
    p["state_low"], p["state_high"] = p.get("state_low") or (), p.get("state_high") or ()
    return RLPDAgent(_spec_and_config(p))


def push_publisher(domain_id: int, count: int, interval_s: float) -> None:
    """Child process: publish ``count`` PolicyParams TRANSIENT_LOCAL; print one JSON line per push."""
    import rclpy
    import torch
    from hilserl_msgs.msg import PolicyParams, Topics
    from hilserl_policy.policy_export import FORMAT, export_policy, sha256_hex
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

    torch.set_num_threads(1)
    agent = learner_default_agent()
    rclpy.init(domain_id=domain_id)
    node = rclpy.create_node("control_loop_weight_publisher")
    latest = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(PolicyParams, Topics.POLICY_PARAMS, latest)
    deadline = time.monotonic() + 60.0
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            raise SystemExit("no subscriber for hilserl/policy_params within 60 s")
        time.sleep(0.05)
    time.sleep(0.5)
    for version in range(1, count + 1):
        data = export_policy(agent, version)
        msg = PolicyParams(version=version, format=FORMAT, sha256=sha256_hex(data))
        msg.data = data
        before = time.time_ns()
        pub.publish(msg)
        print(json.dumps({"version": version, "publish_ns": before, "bytes": len(data)}), flush=True)
        time.sleep(interval_s)
    time.sleep(1.0)  # the last one delivered before this participant leaves
    node.destroy_node()
    rclpy.shutdown()


def measure_weight_push(count: int, interval_s: float = 0.5) -> dict:
    import rclpy
    from hilserl_msgs.msg import PolicyParams, Topics
    from hilserl_policy.policy_export import InferencePolicy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    lease = DomainLease()
    received: dict[int, dict] = {}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=lease.domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("control_loop_weight_receiver", context=context)

    policies = []

    def on_params(msg, info) -> None:
        entered = time.time_ns()
        t = time.perf_counter()
        policies.append(InferencePolicy.from_bytes(bytes(msg.data), msg.sha256))
        load_ms = (time.perf_counter() - t) * 1e3
        received[int(msg.version)] = {"entered_ns": entered, "source_ns": int(info["source_timestamp"]),
                                      "received_ns": int(info["received_timestamp"]), "load_ms": load_ms,
                                      "bytes": len(msg.data)}

    latest = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(PolicyParams, Topics.POLICY_PARAMS, on_params, latest)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--push-publisher",
                             "--domain", str(lease.domain_id), "--pushes", str(count),
                             "--push-interval", str(interval_s)],
                            env=child_environment(lease.domain_id), stdout=subprocess.PIPE, text=True,
                            preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + 120.0 + count * interval_s
        while proc.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.05)
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate(timeout=10)
    finally:
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        executor.shutdown()
        lease.release()
    published = {d["version"]: d for d in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    if proc.returncode != 0 or not published:
        raise RuntimeError(f"weight publisher failed (code {proc.returncode}): {out[-2000:]}")
    pairs = [(published[v], r) for v, r in received.items() if v in published]
    if not pairs:
        raise RuntimeError(f"none of {len(published)} PolicyParams published was received")
    delivery = [(r["entered_ns"] - p["publish_ns"]) / 1e6 for p, r in pairs]
    dds = [(r["received_ns"] - r["source_ns"]) / 1e6 for _, r in pairs]
    load = [r["load_ms"] for _, r in pairs]

    def stats(values: list[float]) -> dict:
        return {"p50": float(np.percentile(values, 50)), "max": float(np.max(values)), "n": len(values)}

    return {"bytes": pairs[0][1]["bytes"], "published": len(published), "received": len(pairs),
            "transfer_ms": stats(delivery), "dds_ms": stats(dds), "load_ms": stats(load),
            "act_ms": inference_ms(policies[-1])}


def inference_ms(policy, calls: int = 300) -> dict:
    """The actor's compute per frame: ``InferencePolicy.act`` on a state of the default network."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    times = []
    for step in range(calls):
        state = rng.uniform(-1.0, 1.0, policy.spec.state_dim).astype(np.float32)
        t = time.perf_counter()
        policy.act({"state": state}, deterministic=False, env_step=step)
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)), "n": calls}


# ---------------------------------------------------------------- reporting
def table(results: dict) -> str:
    rows = [f"{'what':<34}{'measured':>14}{'target':>12}  met"]
    for key in [k for k in results if k.endswith("hz")]:
        r = results[key]
        p99, rate = r["latency_ms"]["p99"], r["miss_rate"]
        rows.append(f"{key + ' latency p50 / p99 (ms)':<34}{r['latency_ms']['p50']:>6.2f} / {p99:>5.2f}"
                    f"{'<= ' + str(TARGET_P99_MS):>12}  {'met' if p99 <= TARGET_P99_MS else 'NOT met'}")
        rows.append(f"{key + ' misses / frames':<34}{str(r['misses']) + ' / ' + str(r['frames']):>14}"
                    f"{'< 0.1 %':>12}  {'met' if rate < TARGET_MISS_RATE else 'NOT met'} ({rate:.3%})")
    if "weight_push" in results:
        w = results["weight_push"]
        rows.append(f"{'weight push bytes':<34}{w['bytes']:>14}")
        rows.append(f"{'weight push p50 / max (ms)':<34}{w['transfer_ms']['p50']:>6.2f} / {w['transfer_ms']['max']:>5.2f}")
        rows.append(f"{'weight load p50 / max (ms)':<34}{w['load_ms']['p50']:>6.2f} / {w['load_ms']['max']:>5.2f}")
        rows.append(f"{'policy act p50 / p99 (ms)':<34}{w['act_ms']['p50']:>6.2f} / {w['act_ms']['p99']:>5.2f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="about one minute: 30 s per rate, 5 pushes")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per rate (default 600)")
    parser.add_argument("--rates", default="10,30", help="control rates in Hz, comma-separated")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the first command not measured")
    parser.add_argument("--pushes", type=int, default=None, help="weight pushes (default 10; --quick 5)")
    parser.add_argument("--push-interval", type=float, default=0.5, help="seconds between weight pushes")
    parser.add_argument("--demo-file", type=Path, default=None, help="reuse this demo file instead of recording 5")
    parser.add_argument("--publish-every-updates", type=int, default=None,
                        help="learner's weight push period in updates (default: config/learner.yaml's; "
                             "a large value isolates the cost of weight pushes)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (node logs)")
    parser.add_argument("--push-publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--domain", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.push_publisher:
        push_publisher(args.domain, args.pushes, args.push_interval)
        return 0
    if args.out is None:
        parser.error("--out FILE.json is required")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if not rates or any(r <= 0 or r > 1000 for r in rates):
        parser.error(f"--rates must be positive rates up to 1000 Hz, got {args.rates!r}")
    duration = args.duration if args.duration is not None else (30.0 if args.quick else 600.0)
    if duration <= 0:
        parser.error(f"--duration must be > 0, got {duration}")
    pushes = args.pushes if args.pushes is not None else (5 if args.quick else 10)
    if args.publish_every_updates is not None and args.publish_every_updates < 1:
        parser.error(f"--publish-every-updates must be >= 1, got {args.publish_every_updates}")

    work = Path(tempfile.mkdtemp(prefix="control_loop_"))
    results: dict = {}
    try:
        demo_file = args.demo_file
        if demo_file is None:
            demo_file = work / "demos.safetensors"
            record_demos(demo_file, episodes=5)
        elif not demo_file.is_file():
            parser.error(f"--demo-file {demo_file} does not exist")
        for rate in rates:
            results[f"{rate:g}hz"] = run_rate(rate, duration, args.warmup, demo_file, work,
                                              args.publish_every_updates)
            print(json.dumps({f"{rate:g}hz": results[f"{rate:g}hz"]}), flush=True)
        if pushes > 0:
            results["weight_push"] = measure_weight_push(pushes, args.push_interval)
    except BaseException:
        print(f"node logs kept in {work}", file=sys.stderr)
        raise
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    targets = {"latency_p99_ms": TARGET_P99_MS, "miss_rate": TARGET_MISS_RATE}
    for key in [k for k in results if k.endswith("hz")]:
        r = results[key]
        r["met"] = {"latency_p99": r["latency_ms"]["p99"] <= TARGET_P99_MS, "miss_rate": r["miss_rate"] < TARGET_MISS_RATE}
    report = {
        "results": results, "targets": targets,
        "config": {"rates_hz": rates, "duration_s_per_rate": duration, "warmup_s": args.warmup,
                   "pushes": pushes, "quick": args.quick, "graph": list(GRAPH_NODES), "human": "none",
                   "bridge": "realtime, state only", "actor": "unpaced", "learner": "pacing free",
                   "publish_every_updates": args.publish_every_updates or composition_parameter(
                       "learner", "publish_every_updates"),
                   "demo_episodes": 5 if args.demo_file is None else str(args.demo_file),
                   "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                            text=True).stdout.strip(),
                   "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(results))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
