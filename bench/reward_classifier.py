"""Reward classifier against the simulator's ground truth, from bags recorded through the graph.

1. ``record_demos`` (runner, private domain): the scripted expert demonstrates ``--demos``
   episodes with both cameras, going on ``--after-success`` steps past each first success
   frame (so that success frames exist beyond the last one of each episode);
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


def record(work: str, demos: int, after_success: int, domain_id: int) -> str:
    params = os.path.join(work, "record.yaml")
    with open(params, "w") as handle:
        yaml.safe_dump({"actor": {"ros__parameters": {"record_after_success": after_success}}}, handle)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with open(os.path.join(work, "record.log"), "w") as log:
        code = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "runner.py"), "--params-file", params,
                               "record_demos", f"demos:={demos}", "bag:=bag", f"output_dir:={work}",
                               f"domain_id:={domain_id}"], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"record_demos exited with {code} (log: {work}/record.log)")
    return os.path.join(work, "bag")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="4 demos, 60 training steps: a smoke run")
    parser.add_argument("--demos", type=int, default=60)
    parser.add_argument("--after-success", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--cameras", default="front,wrist")
    parser.add_argument("--domain-id", type=int, default=230)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.demos, args.after_success, args.steps = 4, 5, 60
    from hilserl_learner.train_reward_classifier import parser as train_parser
    from hilserl_learner.train_reward_classifier import run

    start = time.monotonic()
    work = tempfile.mkdtemp(prefix="reward_classifier_")
    bag = record(work, args.demos, args.after_success, args.domain_id)
    recorded = time.monotonic() - start
    train_args = train_parser().parse_args([bag, "--cameras", args.cameras, "--out", os.path.join(work, "clf"),
                                            "--steps", str(args.steps), "--target-fpr", str(args.target_fpr),
                                            "--seed", str(args.seed)])
    metrics = run(train_args)
    report = {**metrics["held_out"], "threshold": metrics["threshold"], "validation": metrics["validation"],
              "train": metrics["train"],
              "frames": metrics["frames"], "wall_s": round(time.monotonic() - start, 1),
              "record_s": round(recorded, 1),
              "config": {"demos": args.demos, "after_success": args.after_success, "steps": args.steps,
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
