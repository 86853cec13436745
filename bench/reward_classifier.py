"""Reward classifier against the simulator's ground truth, from bags recorded through the graph.

1. ``record_demos`` (runner, private domain): the scripted expert demonstrates ``--demos``
   episodes with both cameras, going on ``--after-success`` steps past each first success
   frame (so that success frames exist beyond the last one of each episode); then
   ``--negatives`` failure episodes, the expert grasping beside the cube and lifting its
   empty gripper (what a policy's missed grasp looks like: without them the classifier
   rewarded such rollouts);
2. ``hilserl_learner.train_reward_classifier`` on the bag, labels from the ground truth
   (``Reward.success`` of each frame), a quarter of the episodes held out;
3. the held-out rates at the threshold chosen for ``--target-fpr``.

    python bench/reward_classifier.py --out out/reward_classifier.json
    python bench/reward_classifier.py --quick        # under a minute

JSON: {"accuracy", "false_positive_rate", "false_negative_rate" (held-out frames, at "threshold",
which the validation episodes chose), "validation": {...}, "train": {...}, "frames": {...},
"config": {...}, "wall_s"}. Targets (the demos issue):
accuracy >= 0.97 and false-positive rate <= 0.01 on held-out episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def record(work: str, name: str, demos: int, domain_id: int, actor: dict, human: dict | None = None) -> str:
    """One record_demos run into the bag ``work/name``, with these actor / simulated human parameters."""
    params = os.path.join(work, f"{name}.yaml")
    with open(params, "w") as handle:
        yaml.safe_dump({"actor": {"ros__parameters": actor},
                        "simulated_human": {"ros__parameters": human or {}}}, handle)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with open(os.path.join(work, f"{name}.log"), "w") as log:
        code = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "runner.py"), "--params-file", params,
                               "record_demos", f"demos:={demos}", f"bag:={name}", f"output_dir:={work}",
                               f"domain_id:={domain_id}"], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"record_demos exited with {code} (log: {work}/{name}.log)")
    return os.path.join(work, name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="4 demos, 60 training steps: a smoke run")
    parser.add_argument("--demos", type=int, default=60)
    parser.add_argument("--after-success", type=int, default=10)
    parser.add_argument("--negatives", type=int, default=20,
                        help="failure episodes to record as well: the expert grasps --miss-distance beside "
                             "the cube and lifts its empty gripper (0: none)")
    parser.add_argument("--miss-distance", type=float, default=0.06)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--cameras", default="front,wrist")
    parser.add_argument("--domain-id", type=int, default=230)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.demos, args.after_success, args.steps, args.negatives = 4, 5, 60, 2
    from hilserl_learner.train_reward_classifier import parser as train_parser
    from hilserl_learner.train_reward_classifier import run

    start = time.monotonic()
    work = tempfile.mkdtemp(prefix="reward_classifier_")
    bags = [record(work, "bag", args.demos, args.domain_id, {"record_after_success": args.after_success})]
    if args.negatives:
        bags.append(record(work, "negatives", args.negatives, args.domain_id,
                           {"record_episodes": args.negatives, "seed": 700_000},
                           {"expert_miss_distance": args.miss_distance}))
    recorded = time.monotonic() - start
    train_args = train_parser().parse_args([*bags, "--cameras", args.cameras, "--out", os.path.join(work, "clf"),
                                            "--steps", str(args.steps), "--target-fpr", str(args.target_fpr),
                                            "--seed", str(args.seed)])
    metrics = run(train_args)
    report = {**metrics["held_out"], "threshold": metrics["threshold"], "validation": metrics["validation"],
              "train": metrics["train"],
              "frames": metrics["frames"], "wall_s": round(time.monotonic() - start, 1),
              "record_s": round(recorded, 1),
              "config": {"demos": args.demos, "after_success": args.after_success, "negatives": args.negatives,
                         "miss_distance": args.miss_distance, "steps": args.steps,
                         "target_fpr": args.target_fpr, "cameras": args.cameras, "labels": "ground_truth",
                         "held_out_share": train_args.held_out, "validation_share": train_args.validation,
                         "work": work}}
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
