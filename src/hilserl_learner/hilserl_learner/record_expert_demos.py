"""Record scripted-expert demonstrations of pick-cube into a demo file.

    python -m hilserl_learner.record_expert_demos --out demos/pick_cube.safetensors --episodes 20

Runs ``hilserl_sim.expert.ScriptedExpert`` on the in-process pick-cube core
(``PickCubeSim``, the same core the bridge runs, through its gymnasium
``PickCubeEnv``), builds each observation with the policy's observation layout
(``hilserl_policy.observation``), keeps the
successful episodes until ``--episodes`` of them are collected, shows one
progress line per episode, and writes the file with ``demo_file.write_demo_file``.
No ROS involved.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from hilserl_learner.demo_file import DemoDataset, DemoDatasetBuilder, write_demo_file
from hilserl_policy.config import ObservationSpec
from hilserl_policy.encoders import STATE_KEY
from hilserl_policy.networks import gripper_command_to_index
from hilserl_policy.observation import LAYOUT_NAMES

POLICY_ACTION_DIM = 3  # the policy commands x, y, z deltas; rotation deltas stay 0


def collect_expert_demos(episodes: int, arm: str = "panda", layout: str = "relative",
                         cameras: tuple[str, ...] = (), image_size: int = 128, seed: int = 0,
                         gripper_penalty: float = -0.02, noise_std: float = 0.0,
                         max_attempts: int | None = None,
                         progress: Callable[[str], None] | None = None,
                         dynamics: bool = False) -> DemoDataset:
    """``episodes`` successful expert episodes (failed attempts are discarded).

    Steps ``hilserl_sim.pick_cube_env.PickCubeEnv`` (the pick-cube core with the
    policy's observation layout, gripper index and change penalty, as the
    in-process training loop sees it); cameras are rendered from its sim.
    Attempt k uses seed ``seed + k``; ``max_attempts`` (default 3 x episodes)
    bounds the attempts, after which a RuntimeError says how many succeeded.
    ``dynamics`` appends joint velocities and efforts (``ObservationLayout.dynamics``).
    """
    from hilserl_sim.expert import EXPERT_DEFAULTS, ScriptedExpert
    from hilserl_sim.pick_cube import PickCubeConfig
    from hilserl_sim.pick_cube_env import PickCubeEnv

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = PickCubeEnv(PickCubeConfig(arm=arm, image_width=image_size, image_height=image_size),
                      layout=layout, gripper_penalty=gripper_penalty, dynamics=dynamics)
    try:
        for camera in cameras:
            if camera not in env.sim.camera_names:
                raise ValueError(f"camera {camera!r} is not in the {arm} scene "
                                 f"({', '.join(env.sim.camera_names)})")
        base = env.observation_spec()
        spec = ObservationSpec(state_dim=base.state_dim, action_dim=base.action_dim,
                               camera_names=tuple(cameras), image_size=image_size,
                               has_gripper=base.has_gripper)

        def observe(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            full = {STATE_KEY: obs[STATE_KEY]}
            for camera in cameras:
                full[camera] = env.sim.render(camera, image_size, image_size)
            return full

        expert = ScriptedExpert(dataclasses.replace(EXPERT_DEFAULTS[arm], noise_std=noise_std))
        builder = DemoDatasetBuilder(spec, layout=dataclasses.asdict(env.layout),
                                     source=f"scripted expert, {arm} pick-cube")
        attempts = 0
        limit = max_attempts if max_attempts is not None else 3 * episodes
        started = time.monotonic()
        while builder.episodes < episodes:
            if attempts >= limit:
                raise RuntimeError(f"only {builder.episodes} of {episodes} expert episodes succeeded "
                                   f"in {attempts} attempts")
            episode_seed = seed + attempts
            attempts += 1
            raw, info = env.reset(seed=episode_seed)
            expert.reset(seed=episode_seed)
            obs = observe(raw)
            steps, done = 0, False
            while not done:
                state = info["sim_state"]
                deltas, command = expert.act(state.ee_position, state.cube_position,
                                             state.gripper_opening)
                action = np.clip(np.asarray(deltas[:POLICY_ACTION_DIM], np.float32), -1.0, 1.0)
                index = gripper_command_to_index(command)
                raw, reward, terminated, truncated, info = env.step({"deltas": action, "gripper": index})
                next_obs = observe(raw)
                builder.add(obs, action, index, float(reward), next_obs, terminated=bool(terminated),
                            truncated=bool(truncated), gripper_penalty=float(info["gripper_penalty"]))
                obs, steps, done = next_obs, steps + 1, terminated or truncated
            if info["success"]:
                builder.end_episode(True)
                if progress is not None:
                    rate = builder.episodes / max(time.monotonic() - started, 1e-9)
                    progress(f"episode {builder.episodes}/{episodes}: success in {steps} steps "
                             f"(seed {episode_seed}), {attempts - builder.episodes} failed, "
                             f"{rate:.1f} episodes/s")
            else:
                builder.discard_episode()
                if progress is not None:
                    progress(f"attempt with seed {episode_seed} failed (discarded)")
        return builder.build()
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="demo file to write (.safetensors)")
    parser.add_argument("--episodes", type=int, default=20, help="successful episodes to record")
    parser.add_argument("--arm", default="panda", choices=("panda", "so101"))
    parser.add_argument("--layout", default="relative", choices=LAYOUT_NAMES,
                        help="observation layout of the state vector (hilserl_policy.observation)")
    parser.add_argument("--dynamics", action="store_true",
                        help="append joint velocities and efforts (the actor's observation_dynamics)")
    parser.add_argument("--cameras", default="", help="comma-separated cameras to record, e.g. front,wrist")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then +1 each)")
    parser.add_argument("--noise-std", type=float, default=0.0, help="expert's action noise")
    parser.add_argument("--gripper-penalty", type=float, default=-0.02)
    args = parser.parse_args(argv)
    cameras = tuple(c for c in args.cameras.split(",") if c)

    def show(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        data = collect_expert_demos(args.episodes, args.arm, args.layout, cameras, args.image_size,
                                    args.seed, args.gripper_penalty, args.noise_std, progress=show,
                                    dynamics=args.dynamics)
    except (ValueError, RuntimeError) as error:
        print(f"record_expert_demos: {error}", file=sys.stderr)
        return 1
    path = write_demo_file(args.out, data)
    print(f"wrote {path}: {data.episodes} episodes, {len(data)} transitions, "
          f"{data.successes} successes, state_dim {data.spec.state_dim}, cameras {list(cameras)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
