"""Sample efficiency on Panda pick-cube: in process (the RLPD core, no ROS) or, with
``--graph``, through the ROS 2 training graph (the same learner settings, paced actor).

Randomised cube, state observations (or camera images + proprioception with
``--cameras``), 20 scripted demos, deterministic
evaluation of 50 fixed-seed episodes every 1,000 env steps, fixed
update-to-data ratio, several seeds, with and without a simulated human
(the scripted expert taking over by an ``InterventionRule``).

    python bench/sample_efficiency.py --out se.json --png se.png
    python bench/sample_efficiency.py --quick            # smoke run, < 2 min
    python bench/sample_efficiency.py --graph --out se_graph.json   # through the graph
    python bench/sample_efficiency.py --graph --modes no_intervention --steps 3000 \
        --rewards ground_truth classifier --classifier-dir runs/classifier   # reward from cameras
    python bench/sample_efficiency.py --cameras front wrist --seeds 0 --modes no_intervention \
        --max-minutes 60 --torch-threads 2 --eval-episodes 20     # images + proprio, 60 min
    python bench/sample_efficiency.py --seeds 0 1 2 --modes no_intervention \
        --layout raw --normalization running --steps 8000 --eval-episodes 20

JSON: {"results": {mode: {"steps_to_95": worst seed's first step at >= 95 %
(null if any seed never got there), "success_at": {step: mean over seeds},
"wall_s": mean seconds per run, "per_seed": {...}, "intervention_rate_at"
(sim_intervention)}}, "config": {...}}. The PNG (own rasteriser, no
matplotlib) plots success vs env steps, one line per seed and mode.

``--rewards classifier`` (graph only): the learner and actor get their reward from the reward
classifier on the bridge's cameras (``train reward:=classifier``), and the success rate
reported is the simulator's ground truth for the same evaluation episodes (a success frame
on ``hilserl/reward_ground_truth`` before the episode ended), with the classifier's own
verdict beside it ("success_classifier"). Such results are keyed "<mode>+classifier_reward".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import struct
import sys
import time
import zlib

import numpy as np

MODES = ("no_intervention", "sim_intervention")
REPORT_STEPS = (2000, 4000, 6000, 10000)


def run_one(job: dict) -> dict:
    """One training run (one seed, one mode) in this process."""
    import torch

    from hilserl_learner.config import LearnerConfig, ReplayConfig, RLPDConfig
    from hilserl_learner.training import TrainingConfig, train
    from hilserl_policy.config import CriticConfig, EncoderConfig, NetworkConfig
    from hilserl_sim.expert import EXPERT_DEFAULTS, ScriptedExpert
    from hilserl_sim.pick_cube_env import PickCubeEnv
    from hilserl_sim.simulated_human import InterventionRule, SimulatedHuman

    seed = job["seed"]
    torch.set_num_threads(job["torch_threads"])
    env = PickCubeEnv(layout=job["layout"], cameras=job["cameras"], dynamics=job["dynamics"])
    spec = env.observation_spec(job["normalization"])
    frozen = job["frozen_backbone"]
    config = LearnerConfig(
        spec=spec,
        networks=NetworkConfig(critic=CriticConfig(num_critics=job["critics"],
                                                   target_subset_size=min(2, job["critics"])),
                               encoder=EncoderConfig(freeze_backbone=frozen,
                                                     random_shift_pad=0 if frozen else 4)),
        rlpd=RLPDConfig(utd_ratio=job["utd"], seed=seed, random_steps=job["random_steps"],
                        actor_bc_weight=job["actor_bc_weight"], batch_size=job["batch_size"],
                        grasp_margin_weight=job["grasp_margin_weight"]),
        replay=ReplayConfig(online_capacity=max(job["steps"], 1), demo_capacity=20_000,
                            cache_frozen_features=frozen and bool(job["cameras"])))
    training = TrainingConfig(total_env_steps=job["steps"], num_demos=job["demos"],
                              eval_every=job["eval_every"], eval_episodes=job["eval_episodes"],
                              train_seed=seed, demo_seed=1_000_000 + 1000 * seed,
                              max_wall_s=60.0 * job["max_minutes"],
                              weights_every_updates=job["weights_every"])
    human = None
    if job["mode"] == "sim_intervention":
        human = SimulatedHuman(InterventionRule(**job["rule"]), seed=seed)
    expert = ScriptedExpert(EXPERT_DEFAULTS["panda"], seed=seed)

    def progress(point):
        print(f"[{job['mode']} seed {seed}] step {point.env_step:6d} success {point.success_rate:5.2f} "
              f"interv {point.intervention_rate:4.2f} updates {point.updates} {point.wall_s:6.0f}s",
              flush=True)

    start, cpu_start = time.monotonic(), time.process_time()
    result = train(env, config, training, expert=expert, human=human, progress=progress)
    env.close()
    return {"mode": job["mode"], "seed": seed, "wall_s": round(time.monotonic() - start, 1),
            "cpu_s": round(time.process_time() - cpu_start, 1),
            "steps_to_95": result.steps_to(0.95), "demo_transitions": result.demo_transitions,
            "env_steps": result.env_steps,
            "intervention_steps": result.intervention_steps,
            "curve": [{"env_step": p.env_step, "success": p.success_rate,
                       "intervention_rate": round(p.intervention_rate, 4),
                       "mean_length": round(p.mean_length, 1), "updates": p.updates}
                      for p in result.curve]}


def graph_intervention_rates(log_dir: str, every: int) -> dict[int, float]:
    """Share of intervened steps in each window of ``every`` env steps (1..every -> every, ...),
    from the learner's transition log (every step the actor streamed, in order)."""
    from hilserl_learner.transition_log import read_log
    from hilserl_msgs.msg import Transition
    from rclpy.serialization import deserialize_message

    if not os.path.isdir(log_dir):
        return {}
    records = sorted(read_log(log_dir), key=lambda r: r.sequence)
    flags = [bool(deserialize_message(bytes(r.payload), Transition).intervened) for r in records]
    return {(i // every + 1) * every: round(float(np.mean(flags[i:i + every])), 4)
            for i in range(0, len(flags), every)}


class GroundTruthObserver:
    """Ground-truth success of each episode while the classifier is the reward: an rclpy node
    on the run's domain, counting a success frame on hilserl/reward_ground_truth between two
    episode ends (hilserl/episode_status with an end reason)."""

    def __init__(self, domain_id: int):
        import threading

        import rclpy
        from hilserl_msgs.msg import EpisodeStatus, Reward, Topics
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("ground_truth_observer", context=self.context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.episodes: list[dict] = []
        self._succeeded = False
        self.node.create_subscription(Reward, "hilserl/reward_ground_truth", self._on_reward, qos)
        self.node.create_subscription(EpisodeStatus, Topics.EPISODE_STATUS, self._on_status, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_reward(self, msg) -> None:
        self._succeeded = self._succeeded or bool(msg.success)

    def _on_status(self, msg) -> None:
        if msg.end_reason == 4:  # END_ABORTED: the actor starts the episode again, it counts nothing
            self._succeeded = False
        elif msg.end_reason != 0:  # END_RUNNING
            self.episodes.append({"evaluation": bool(msg.evaluation), "ground_truth": self._succeeded,
                                  "classifier": bool(msg.success), "steps": int(msg.step)})
            self._succeeded = False

    def evaluation_blocks(self, size: int) -> list[list[dict]]:
        runs = [e for e in self.episodes if e["evaluation"]]
        return [runs[i:i + size] for i in range(0, len(runs), size)]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def run_graph(job: dict) -> dict:
    """One training run through the ROS 2 graph: the train composition (bridge in lock-step,
    mux, limiter, simulated human in sim_intervention mode, learner, actor paced by the
    learner at the job's update-to-data ratio), started by launch/runner.py on a private
    domain; the actor's evaluations (curve.json) are the curve."""
    import subprocess
    import tempfile

    import yaml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tempfile.mkdtemp(prefix=f"se_graph_{job['mode']}_{job['seed']}_")
    demos = os.path.join(work, "demos.safetensors")
    subprocess.run([sys.executable, "-m", "hilserl_learner.record_expert_demos", "--out", demos,
                    "--episodes", str(job["demos"]), "--layout", job["layout"],
                    *(["--dynamics"] if job["dynamics"] else []),
                    "--seed", str(1_000_000 + 1000 * job["seed"])], check=True, capture_output=True)
    params = {
        "actor": {"ros__parameters": {
            "observation_layout": job["layout"], "observation_dynamics": job["dynamics"],
            "seed": 100_003 * job["seed"], "paced": True,
            "max_env_steps": job["steps"], "eval_every_steps": job["eval_every"],
            "eval_episodes": job["eval_episodes"], "results_dir": work}},
        "learner": {"ros__parameters": {
            "demo_file": demos, "checkpoint_dir": os.path.join(work, "checkpoints"), "tensorboard_dir": "",
            "seed": job["seed"], "utd_ratio": float(job["utd"]), "num_critics": job["critics"],
            "target_subset_size": min(2, job["critics"]), "random_steps": job["random_steps"],
            "actor_bc_weight": job["actor_bc_weight"], "grasp_margin_weight": job["grasp_margin_weight"],
            "state_normalization": job["normalization"], "observation_layout": job["layout"],
            "observation_dynamics": job["dynamics"]}},
        "simulated_human": {"ros__parameters": {
            "seed": job["seed"], "rule": job["rule"]["kind"],
            "start_probability": float(job["rule"]["start_probability"]),
            "decay_steps": job["rule"]["decay_steps"], "patience": job["rule"]["patience"]}},
    }
    if job["reward"] == "classifier":  # 0: the values saved with the classifier
        params["reward_classifier"] = {"ros__parameters": {"hold_frames": job["classifier_hold_frames"],
                                                           "threshold": job["classifier_threshold"]}}
    overrides = os.path.join(work, "overrides.yaml")
    with open(overrides, "w") as handle:
        yaml.safe_dump(params, handle)
    human = "sim" if job["mode"] == "sim_intervention" else "none"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    reward = [] if job["reward"] == "ground_truth" else ["reward:=classifier",
                                                         f"classifier_dir:={job['classifier_dir']}"]
    observer = GroundTruthObserver(job["domain_id"]) if reward else None
    start = time.monotonic()
    try:
        with open(os.path.join(work, "graph.log"), "w") as log:
            code = subprocess.run([sys.executable, os.path.join(root, "launch", "runner.py"), "train",
                                   f"human:={human}", f"domain_id:={job['domain_id']}", *reward,
                                   "--params-file", overrides],
                                  env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    finally:
        if observer is not None:
            observer.close()
    with open(os.path.join(work, "curve.json")) as handle:
        curve = json.load(handle)["curve"]
    if observer is not None:  # the curve's success is the classifier's verdict: report the ground truth
        blocks = observer.evaluation_blocks(job["eval_episodes"])
        if len(blocks) < len(curve):
            raise RuntimeError(f"ground truth seen for {len(blocks)} evaluations, the actor made {len(curve)}")
        for point, block in zip(curve, blocks):
            point["success_classifier"] = point["success_rate"]
            point["success_rate"] = float(np.mean([e["ground_truth"] for e in block]))
    print(f"[{job['label']} seed {job['seed']}] graph run exit {code}, "
          f"{[round(p['success_rate'], 2) for p in curve]} (log: {work}/graph.log)", flush=True)
    # The actor evaluates at the first episode boundary past each multiple of eval_every (the
    # last one past max_env_steps): report it at that multiple, keep the exact count.
    rates = graph_intervention_rates(os.path.join(work, "checkpoints", "transition_log"), job["eval_every"])
    points = [{"env_step": min(job["steps"], p["env_steps"] // job["eval_every"] * job["eval_every"]),
               "env_steps_exact": p["env_steps"], "success": p["success_rate"],
               "mean_length": p["mean_length"],
               **({"success_classifier": p["success_classifier"]} if "success_classifier" in p else {})}
              for p in curve]
    for point in points:
        point["intervention_rate"] = rates.get(point["env_step"])
    first = next((p["env_step"] for p in points if p["success"] >= 0.95), None)
    return {"mode": job["label"], "seed": job["seed"], "wall_s": round(time.monotonic() - start, 1),
            "steps_to_95": first, "curve": points, "exit_code": code,
            **({"episodes": observer.episodes} if observer is not None else {})}


def summarise(runs: list[dict], mode: str) -> dict:
    mine = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["seed"])
    steps = [r["steps_to_95"] for r in mine]
    out = {"steps_to_95": None if any(s is None for s in steps) else max(steps),
           "success_at": {}, "wall_s": round(float(np.mean([r["wall_s"] for r in mine])), 1),
           "per_seed": {str(r["seed"]): {"steps_to_95": r["steps_to_95"], "wall_s": r["wall_s"],
                                         "cpu_s": r.get("cpu_s"), "curve": r["curve"],
                                         **({"episodes": r["episodes"]} if "episodes" in r else {})}
                        for r in mine}}
    all_steps = sorted({p["env_step"] for r in mine for p in r["curve"]})
    for step in sorted(set(REPORT_STEPS) | set(all_steps)):
        values = [p["success"] for r in mine for p in r["curve"] if p["env_step"] == step]
        if values and (step in REPORT_STEPS or step == all_steps[-1]):
            out["success_at"][str(step)] = round(float(np.mean(values)), 3)
    if mode.startswith("sim_intervention"):
        out["intervention_rate_at"] = {}
        for step in all_steps:
            values = [p["intervention_rate"] for r in mine for p in r["curve"]
                      if p["env_step"] == step and p["intervention_rate"] is not None]
            out["intervention_rate_at"][str(step)] = round(float(np.mean(values)), 4) if values else None
        out["intervention_steps_total"] = {str(r["seed"]): r.get("intervention_steps") for r in mine}
    return out


# ----------------------------------------------------------------- PNG output
_DIGITS = {  # 3x5 bitmap font for tick labels
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", "k": "100101110101101", "%": "101001010100101",
}
_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _text(img: np.ndarray, x: int, y: int, text: str, scale: int = 2) -> None:
    for ch in text:
        bits = _DIGITS.get(ch)
        if bits:
            for i, b in enumerate(bits):
                if b == "1":
                    r, c = divmod(i, 3)
                    img[y + r * scale:y + (r + 1) * scale, x + c * scale:x + (c + 1) * scale] = 0
        x += 4 * scale


def _line(img: np.ndarray, p0, p1, colour, width: int = 2, dashed: bool = False) -> None:
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    for i, t in enumerate(np.linspace(0.0, 1.0, n)):
        if dashed and (i // 6) % 2:
            continue
        x = int(round(p0[0] + t * (p1[0] - p0[0])))
        y = int(round(p0[1] + t * (p1[1] - p0[1])))
        img[max(0, y - width // 2):y + (width + 1) // 2, max(0, x - width // 2):x + (width + 1) // 2] = colour


def write_png(path: str, series: list[tuple[str, list[tuple[int, float]], bool]], max_step: int) -> None:
    """Success (0-100 %) vs env steps; ``series``: (label, points, dashed). Legend: colour order
    = order of ``series`` (printed to stdout); solid = no_intervention, dashed = sim_intervention."""
    width, height, left, right, top, bottom = 800, 480, 60, 20, 20, 40
    img = np.full((height, width, 3), 255, np.uint8)
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(step, rate):
        return left + plot_w * step / max_step, top + plot_h * (1.0 - rate)

    for k in range(0, 11, 2):  # horizontal grid every 20 %
        y = int(top + plot_h * (1 - k / 10))
        img[y, left:left + plot_w] = 210
        _text(img, 8, y - 5, f"{k * 10}%")
    tick = 1000 if max_step <= 12_000 else 2000
    for s in range(0, max_step + 1, tick):
        x = int(xy(s, 0)[0])
        img[top:top + plot_h, x] = 230
        _text(img, x - 8, top + plot_h + 10, f"{s // 1000}k")
    img[top:top + plot_h + 1, left] = 0
    img[top + plot_h, left:left + plot_w + 1] = 0
    _line(img, xy(0, 0.95), xy(max_step, 0.95), (160, 160, 160), 1, dashed=True)
    for i, (_, points, dashed) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = [(0, 0.0)] + list(points)
        for a, b in zip(pts[:-1], pts[1:]):
            _line(img, xy(*a), xy(*b), colour, 3, dashed)
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main(argv=None) -> int:
    from hilserl_learner.config import RLPDConfig
    from hilserl_policy.observation import LAYOUT_NAMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the JSON here")
    parser.add_argument("--png", help="write the learning-curve PNG here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed per mode, 1,000 steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per run")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--demos", type=int, default=20)
    parser.add_argument("--layout", default=None, choices=LAYOUT_NAMES,
                        help="state layout (default: relative; proprio with --cameras)")
    parser.add_argument("--dynamics", action="store_true",
                        help="append joint velocities and actuator forces to the layout's state")
    parser.add_argument("--cameras", nargs="*", default=[],
                        help="image observations from these scene cameras, e.g. front wrist "
                             "(in process only)")
    parser.add_argument("--frozen-backbone", action="store_true",
                        help="freeze the image backbone and encode each stored frame once")
    parser.add_argument("--batch-size", type=int, default=RLPDConfig.batch_size)
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop each run after this many minutes (0: none); the curve so far is kept")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per in-process run")
    parser.add_argument("--weights-every", type=int, default=0,
                        help="in process: act on weights exported every this many updates, like the "
                             "graph's actor (0: on the learner's own networks)")
    parser.add_argument("--normalization", default="none", choices=("none", "bounds", "running"))
    parser.add_argument("--utd", type=float, default=1.0, help="updates per env step")
    parser.add_argument("--critics", type=int, default=2)
    parser.add_argument("--random-steps", type=int, default=0)
    parser.add_argument("--actor-bc", type=float, default=RLPDConfig.actor_bc_weight,
                        help="actor behaviour-cloning weight on demo/intervention rows (0: pure RLPD)")
    parser.add_argument("--grasp-margin-weight", type=float, default=RLPDConfig.grasp_margin_weight,
                        help="grasp-critic large-margin loss weight on demo/intervention rows (0: off)")
    parser.add_argument("--rule", default="episode_probability",
                        choices=("episode_probability", "no_progress", "success_rate", "always"))
    parser.add_argument("--rule-p", type=float, default=0.5, help="rule's start_probability")
    parser.add_argument("--rule-decay", type=int, default=5000, help="rule's decay_steps")
    parser.add_argument("--rule-patience", type=int, default=10)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs in parallel (one process and one torch thread each)")
    parser.add_argument("--rewards", nargs="+", default=["ground_truth"], choices=("ground_truth", "classifier"),
                        help="graph only: reward sources to train with, side by side")
    parser.add_argument("--classifier-dir", default="runs/classifier",
                        help="the reward classifier for --rewards classifier (train_reward_classifier)")
    parser.add_argument("--classifier-hold", type=int, default=0,
                        help="the classifier node's hold_frames (0: the value saved with the classifier)")
    parser.add_argument("--classifier-threshold", type=float, default=0.0,
                        help="the classifier node's threshold (0: the value saved with the classifier)")
    parser.add_argument("--graph", action="store_true",
                        help="train through the ROS 2 graph (train composition, paced actor) instead of "
                             "in process; runs one after the other")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_every, args.eval_episodes, args.demos = 1000, 500, 5, 5
        args.seeds = args.seeds[:1]
    if args.layout is None:
        args.layout = "proprio" if args.cameras else "relative"
    if args.graph and (args.cameras or args.frozen_backbone or args.max_minutes or args.weights_every
                       or args.batch_size != RLPDConfig.batch_size):
        parser.error("--cameras, --frozen-backbone, --batch-size, --max-minutes and --weights-every are "
                     "in-process options (the graph's actor observes state vectors)")
    if args.rewards != ["ground_truth"] and not args.graph:
        parser.error("--rewards classifier trains through the graph: add --graph")
    rule = {"kind": args.rule, "start_probability": args.rule_p, "decay_steps": args.rule_decay,
            "patience": args.rule_patience}
    jobs = [{"mode": mode, "seed": seed, "steps": args.steps, "eval_every": args.eval_every,
             "eval_episodes": args.eval_episodes, "demos": args.demos, "layout": args.layout,
             "dynamics": args.dynamics,
             "normalization": args.normalization, "utd": args.utd, "critics": args.critics,
             "random_steps": args.random_steps, "actor_bc_weight": args.actor_bc,
             "grasp_margin_weight": args.grasp_margin_weight, "rule": rule,
             "cameras": tuple(args.cameras), "frozen_backbone": args.frozen_backbone,
             "batch_size": args.batch_size, "max_minutes": args.max_minutes,
             "torch_threads": args.torch_threads, "weights_every": args.weights_every,
             "reward": reward, "classifier_dir": os.path.abspath(args.classifier_dir),
             "classifier_hold_frames": args.classifier_hold, "classifier_threshold": args.classifier_threshold,
             "label": mode if reward == "ground_truth" else f"{mode}+classifier_reward"}
            for reward in args.rewards for mode in args.modes for seed in args.seeds]
    start = time.monotonic()
    if args.graph:
        for index, job in enumerate(jobs):
            job["domain_id"] = 200 + index % 30  # tests lease 1..100
        runs = [run_graph(job) for job in jobs]
    elif args.workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
            runs = pool.map(run_one, jobs, chunksize=1)
    else:
        runs = [run_one(job) for job in jobs]
    config = {k: v for k, v in vars(args).items() if k not in ("out", "png", "workers")}
    config.update({"path": "ros2 graph (train composition, paced actor)" if args.graph else "in process",
                   "rule": rule if "sim_intervention" in args.modes else None,
                   "scene": "panda pick-cube, randomised cube",
                   "learning_starts": 100, "total_wall_s": round(time.monotonic() - start, 1)})
    labels = list(dict.fromkeys(job["label"] for job in jobs))
    report = {"results": {label: summarise(runs, label) for label in labels}, "config": config}
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    for mode, res in report["results"].items():
        print(f"{mode}: steps_to_95 {res['steps_to_95']}  success_at {res['success_at']}  "
              f"per-seed {[v['steps_to_95'] for v in res['per_seed'].values()]}  wall {res['wall_s']} s")
    if args.png:
        series = [(f"{r['mode']} seed {r['seed']}", [(p["env_step"], p["success"]) for p in r["curve"]],
                   r["mode"].startswith("sim_intervention")) for r in runs]
        write_png(args.png, series, args.steps)
        for i, (label, _, _) in enumerate(series):
            print(f"png line colour {_COLOURS[i % len(_COLOURS)]}: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
