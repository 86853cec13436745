#!/usr/bin/env python3
"""Scripted-expert success rate on seeded pick-cube episodes (targets: Panda >= 95 %, SO-101 >= 90 %).

    python bench/expert_success.py --episodes 100 --noise 0.1 --out expert_success.json

Episode k uses seed ``seed0 + k`` for both the scene (cube and arm start) and the expert's noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

TARGETS = {"panda": 0.95, "so101": 0.90}


def run(arm: str, episodes: int, noise: float, cube_yaw_range: float, seed0: int) -> dict:
    from hilserl_sim.expert import EXPERT_DEFAULTS, ScriptedExpert, run_expert_episode
    from hilserl_sim.pick_cube import PickCubeConfig, PickCubeSim

    sim = PickCubeSim(PickCubeConfig(arm=arm, cube_yaw_range=cube_yaw_range))
    expert = ScriptedExpert(dataclasses.replace(EXPERT_DEFAULTS[arm], noise_std=noise))
    start = time.perf_counter()
    outcomes = [run_expert_episode(sim, expert, seed=seed0 + k) for k in range(episodes)]
    seconds = time.perf_counter() - start
    sim.close()
    successes = sum(ok for ok, _ in outcomes)
    return {
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "target": TARGETS[arm],
        "meets_target": successes / episodes >= TARGETS[arm],
        "mean_steps_to_success": float(np.mean([n for ok, n in outcomes if ok])) if successes else None,
        "failed_seeds": [seed0 + k for k, (ok, _) in enumerate(outcomes) if not ok],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.1, help="std of the expert's action noise")
    parser.add_argument("--cube-yaw-range", type=float, default=0.0)
    parser.add_argument("--seed0", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    results = {}
    for arm in TARGETS:
        results[arm] = run(arm, args.episodes, args.noise, args.cube_yaw_range, args.seed0)
        r = results[arm]
        print(f"{arm:6s} {r['successes']}/{r['episodes']} ({r['success_rate']:.0%}, target {r['target']:.0%}), "
              f"mean {r['mean_steps_to_success']:.1f} steps, {r['seconds']:.1f} s", flush=True)
    report = {"results": results, "noise_std": args.noise, "cube_yaw_range": args.cube_yaw_range,
              "seed0": args.seed0}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
