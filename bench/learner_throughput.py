"""Learner throughput: gradient updates per second of the RLPD core on this CPU.

    python bench/learner_throughput.py --out FILE.json [--quick]

Cases (batch 256, state 21-D, action 4-D, default configs, 2 torch threads):
  state_2q              2 critics (HIL-SERL), critic-to-actor 2
  state_10q             10 critics, target min over a random 2 (RLPD)
  state_*_bf16_critic   the same with CriticConfig.matmul_precision="bfloat16"
                        (opt-in, not the default)
  image_2cam            two 128x128 cameras + state, frozen ResNet-10-shaped
                        backbone (random weights) with features cached per
                        stored frame (each frame encoded once, when stored)
  image_2cam_frozen_shift   the same backbone, frozen, but re-encoding the
                        randomly shifted images of every batch (pixel augmentation)
  image_2cam_trainable  the same with a trainable ResNet-10 (+ random shift)
  image_2cam_trainable_small_cnn  the default trainable small CNN (+ random shift)
  sb3_sac_state         Stable-Baselines3 SAC, same dims and batch (reference;
                        skipped with a note if stable-baselines3 is missing)

Each entry reports the median updates/s over timed trials (the state cases
and SB3 interleaved trial by trial, with the per-trial ratio to SB3), the matmul/conv
GFLOP/s that implies (FLOPs counted by torch.utils.flop_counter over real
updates, split by the dtype they ran in), the measured float32 and bfloat16
matmul peaks of this machine, the fraction of peak (against the peak of the
precision each FLOP ran in: the image cases run the head Linear and the
backbone convs in bfloat16 by default, EncoderConfig.head_precision /
backbone_precision), and how busy the CPUs were with other processes while it
ran (this machine is shared: a high value means the figure is pessimistic).
Also: bytes of a 100k-transition two-camera buffer / raw uint8 image bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for package in ("hilserl_policy", "hilserl_learner"):  # run from a checkout without colcon
    sys.path.insert(0, str(ROOT / "src" / package))

from hilserl_learner.buffers import DemoOnlineReplay, ReplayBuffer, TransitionSource  # noqa: E402
from hilserl_learner.config import LearnerConfig, RLPDConfig, ReplayConfig  # noqa: E402
from hilserl_learner.rlpd import RLPDAgent, keep_freed_memory_in_process  # noqa: E402
from hilserl_policy.config import (  # noqa: E402
    CriticConfig,
    EncoderConfig,
    NetworkConfig,
    ObservationSpec,
)
from hilserl_policy.encoders import feature_key  # noqa: E402

STATE_DIM, ACTION_DIM, BATCH = 21, 4, 256
CAMERAS = ("front", "wrist")


# ------------------------------------------------------------------ measuring
def cpu_marks() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine, CPU-seconds of this process)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [float(v) for v in fields]
    idle = values[3] + values[4]
    ticks = os.sysconf("SC_CLK_TCK")
    # process_time: nanosecond clock (os.times counts 10 ms ticks, too coarse per trial).
    return (sum(values[:8]) - idle) / ticks, time.process_time()


def peak_matmul_gflops(size: int = 2048, repeats: int = 5,
                       dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def count_flops(step, repeats: int = 2) -> dict[str, float]:
    """Matmul/conv FLOPs per step by input dtype ("float32", "bfloat16")."""
    from collections import Counter

    from torch.utils.flop_counter import FlopCounterMode

    class DtypeFlopCounter(FlopCounterMode):
        def __init__(self):
            super().__init__(display=False)
            self.by_dtype: Counter = Counter()

        def _count_flops(self, func_packet, out, args, kwargs):
            if func_packet in self.flop_registry:
                tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
                dtype = str(tensor.dtype).replace("torch.", "") if tensor is not None else "other"
                self.by_dtype[dtype] += self.flop_registry[func_packet](*args, **kwargs,
                                                                        out_val=out)
            return super()._count_flops(func_packet, out, args, kwargs)

    counter = DtypeFlopCounter()
    with counter:
        for _ in range(repeats):
            step()
    return {k: v / repeats for k, v in counter.by_dtype.items()}


def summarize(rates: list[float], busy: list[float], per_trial: int, flops: dict[str, float],
              peaks: dict[str, float], cpu_rates: list[float]) -> dict:
    """``fraction_of_peak``: the time the update's matmul/conv FLOPs would take at the
    measured peak of the precision each ran in (bf16 peak for bf16 work), times the rate."""
    rate = statistics.median(rates)
    total = sum(flops.values())
    gflops = rate * total / 1e9
    ideal_s = sum(f / (peaks.get(d, peaks["float32"]) * 1e9) for d, f in flops.items())
    bf16_share = flops.get("bfloat16", 0.0) / total if total else 0.0
    return {"updates_per_s": round(rate, 2), "best_updates_per_s": round(max(rates), 2),
            "trials": [round(r, 2) for r in rates], "updates_per_trial": per_trial,
            "gflop_per_update": round(total / 1e9, 3),
            "bf16_share_of_flops": round(bf16_share, 3), "gflops": round(gflops, 1),
            "peak_gflops": round(peaks["float32"], 1),
            "peak_gflops_bf16": round(peaks["bfloat16"], 1),
            "fraction_of_peak": round(rate * ideal_s, 3),
            "fraction_of_fp32_peak": round(gflops / peaks["float32"], 3),
            "other_processes_cpu_cores": round(statistics.median(busy), 2),
            # Updates per CPU-second of this process: with 1 thread pinned to a core,
            # time other processes take from that core does not count.
            "updates_per_cpu_s": round(statistics.median(cpu_rates), 2),
            "cpu_trials": [round(r, 2) for r in cpu_rates]}


def time_interleaved(cases: dict[str, tuple], trials: int,
                     peak: dict[str, float]) -> dict[str, dict]:
    """Time several cases round-robin, trial by trial, so that each trial of every
    case sees the same machine conditions (this VM's speed drifts by +-30%).

    cases: name -> (step, updates_per_trial, warmup_updates).
    """
    flops: dict[str, dict[str, float]] = {}
    rates, busy = {n: [] for n in cases}, {n: [] for n in cases}
    cpu_rates: dict[str, list[float]] = {n: [] for n in cases}
    for name, (step, _, warmup) in cases.items():
        for _ in range(warmup):
            step()
        flops[name] = count_flops(step)
    order = list(cases)
    for trial in range(trials):
        # Alternate the order so that no case always runs right after the same one.
        for name in (order if trial % 2 == 0 else order[::-1]):
            step, per_trial, _ = cases[name]
            marks, start = cpu_marks(), time.perf_counter()
            for _ in range(per_trial):
                step()
            elapsed = time.perf_counter() - start
            end = cpu_marks()
            rates[name].append(per_trial / elapsed)
            cpu_rates[name].append(per_trial / max(end[1] - marks[1], 1e-9))
            busy[name].append(max(0.0, (end[0] - marks[0]) - (end[1] - marks[1])) / elapsed)
    return {name: summarize(rates[name], busy[name], cases[name][1], flops[name], peak,
                            cpu_rates[name]) for name in cases}


def time_updates(step, trials: int, per_trial: int, warmup: int, peak: dict[str, float]) -> dict:
    return time_interleaved({"case": (step, per_trial, warmup)}, trials, peak)["case"]


# ---------------------------------------------------------------------- cases
def state_step(num_critics: int, precision: str = "float32"):
    spec = ObservationSpec(state_dim=STATE_DIM, action_dim=ACTION_DIM)
    config = LearnerConfig(spec=spec, networks=NetworkConfig(
        critic=CriticConfig(num_critics=num_critics, target_subset_size=2,
                            matmul_precision=precision)))
    agent = RLPDAgent(config)
    replay = DemoOnlineReplay(spec, 20_000, 20_000)
    rng = np.random.default_rng(0)
    for i in range(4000):
        replay.add({"state": rng.standard_normal(STATE_DIM, np.float32)},
                   rng.uniform(-1, 1, ACTION_DIM).astype(np.float32), 0.0,
                   {"state": rng.standard_normal(STATE_DIM, np.float32)}, i % 50 == 49,
                   source=TransitionSource.DEMO if i % 2 else TransitionSource.POLICY)

    def step():
        agent.update(replay.sample(BATCH, agent.rng))

    return step


def image_config(backbone: str, frozen: bool, cached: bool, shift: int) -> LearnerConfig:
    spec = ObservationSpec(state_dim=STATE_DIM, action_dim=ACTION_DIM, camera_names=CAMERAS,
                           image_size=128)
    encoder = EncoderConfig(backbone=backbone, freeze_backbone=frozen, random_shift_pad=shift)
    return LearnerConfig(spec=spec, networks=NetworkConfig(encoder=encoder),
                         replay=ReplayConfig(cache_frozen_features=cached))


def fill_image_replay(spec: ObservationSpec, transitions: int) -> DemoOnlineReplay:
    replay = DemoOnlineReplay(spec, transitions, transitions)
    rng = np.random.default_rng(0)
    frame = {c: rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for c in CAMERAS}
    for i in range(transitions):
        obs = {"state": rng.standard_normal(STATE_DIM, np.float32), **frame}
        nxt = {"state": rng.standard_normal(STATE_DIM, np.float32), **frame}
        replay.add(obs, rng.uniform(-1, 1, ACTION_DIM).astype(np.float32), 0.0, nxt, False,
                   source=TransitionSource.DEMO if i % 2 else TransitionSource.POLICY)
    return replay


def image_cached_case(trials: int, per_trial: int, peak: dict[str, float]) -> dict:
    config = image_config("resnet10", frozen=True, cached=True, shift=0)
    agent = RLPDAgent(config)
    replay = fill_image_replay(config.spec, 600)
    for buffer in replay.buffers().values():
        buffer.enable_feature_cache(agent.encoder.feature_shapes)
    # Encoding cost, paid once per stored frame: time it on 64 frames.
    online = replay.online
    online.frame_feature_ready[:] = True
    online.frame_feature_ready[:64] = False
    start = time.perf_counter()
    online.refresh_features(agent.encode_for_cache, chunk_size=64)
    frames_per_s = 64 / (time.perf_counter() - start)
    # The update does not depend on the cached values: fill the rest at random.
    rng = np.random.default_rng(1)
    for buffer in replay.buffers().values():
        for camera in CAMERAS:
            features = buffer.frame_features[camera]
            features[64:] = rng.standard_normal(features[64:].shape).astype(np.float16)
        buffer.frame_feature_ready[:] = True

    def step():
        agent.update(replay.sample(BATCH, agent.rng))

    result = time_updates(step, trials, per_trial, warmup=3, peak=peak)
    result["feature_cache_frames_per_s"] = round(frames_per_s, 1)
    result["note"] = ("frozen ResNet-10 features cached per stored frame (both cameras); "
                      "no pixel random shift (it cannot apply to cached features)")
    return result


def image_pixels_case(backbone: str, frozen: bool, trials: int, per_trial: int, warmup: int,
                      peak: dict[str, float]) -> dict:
    config = image_config(backbone, frozen=frozen, cached=False, shift=4)
    agent = RLPDAgent(config)
    replay = fill_image_replay(config.spec, 600)

    def step():
        agent.update(replay.sample(BATCH, agent.rng))

    result = time_updates(step, trials, per_trial, warmup=warmup, peak=peak)
    result["note"] = (f"{backbone} backbone, {'frozen' if frozen else 'trainable'}, random shift "
                      "pad 4: each batch's shifted images encoded once (obs and next obs)")
    return result


def sb3_step():
    """(train step, version) of Stable-Baselines3 SAC, or (None, why it is skipped)."""
    try:
        import gymnasium as gym
        import stable_baselines3
        from stable_baselines3 import SAC
    except ImportError as error:
        return None, (f"stable-baselines3 not installed ({error}); "
                      "pip install stable-baselines3 to compare")

    class RandomStateEnv(gym.Env):
        observation_space = gym.spaces.Box(-5, 5, (STATE_DIM,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)

        def reset(self, seed=None, options=None):
            return np.zeros(STATE_DIM, np.float32), {}

        def step(self, action):
            return np.random.standard_normal(STATE_DIM).astype(np.float32), 0.0, False, False, {}

    # learning_starts above the collected steps: learn() only fills the buffer.
    model = SAC("MlpPolicy", RandomStateEnv(), batch_size=BATCH, learning_starts=10_000,
                device="cpu", verbose=0, seed=0)
    model.learn(2000)

    def step():
        model.train(gradient_steps=1, batch_size=BATCH)

    return step, stable_baselines3.__version__


def buffer_memory_ratio() -> dict:
    spec = ObservationSpec(state_dim=STATE_DIM, action_dim=ACTION_DIM, camera_names=CAMERAS,
                           image_size=128, has_gripper=True)
    buffer = ReplayBuffer(spec, capacity=100_000)  # np.zeros: pages untouched until written
    raw = 100_000 * len(CAMERAS) * 128 * 128 * 3
    return {"image_buffer_bytes_ratio": round(buffer.nbytes / raw, 4),
            "image_buffer_bytes": buffer.nbytes, "raw_image_bytes": raw}


# ----------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="fewer trials (under a minute)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--trials", type=int, default=None,
                        help="interleaved trials of the state cases (default 3 quick, 7 full)")
    parser.add_argument("--per-trial", type=int, default=None,
                        help="2-critic updates per trial (default 20 quick, 60 full; 10 critics: 1/3)")
    parser.add_argument("--state-only", action="store_true",
                        help="only the state cases and SB3 (no image cases)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator_tuned = keep_freed_memory_in_process()
    quick = args.quick
    trials = args.trials or (3 if quick else 7)
    peak = {"float32": peak_matmul_gflops(),
            "bfloat16": peak_matmul_gflops(dtype=torch.bfloat16)}
    results: dict[str, dict] = {}
    started = time.perf_counter()
    per_trial = args.per_trial or (20 if quick else 60)
    cases = {"state_2q": (state_step(2), per_trial, 10),
             "state_10q": (state_step(10), per_trial // 3, 5),
             # Not the default: CriticConfig.matmul_precision="bfloat16" (opt-in).
             "state_2q_bf16_critic": (state_step(2, "bfloat16"), per_trial, 10),
             "state_10q_bf16_critic": (state_step(10, "bfloat16"), per_trial // 3, 5)}
    sb3, sb3_info = sb3_step()
    if sb3 is not None:
        cases["sb3_sac_state"] = (sb3, per_trial, 10)
    results.update(time_interleaved(cases, trials, peak))
    if sb3 is None:
        results["sb3_sac_state"] = {"skipped": sb3_info}
    else:
        results["sb3_sac_state"]["note"] = f"stable-baselines3 {sb3_info} SAC, MlpPolicy 256x256"
        for name in ("state_2q", "state_10q", "state_2q_bf16_critic",
                     "state_10q_bf16_critic"):  # trial-by-trial ratio, same conditions
            for key, trials_key in (("ratio_to_sb3", "trials"),
                                    ("cpu_ratio_to_sb3", "cpu_trials")):
                ratios = [a / b for a, b in zip(results[name][trials_key],
                                                results["sb3_sac_state"][trials_key])]
                results[name][key] = round(statistics.median(ratios), 3)
                quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
                results[name][f"{key}_quartiles"] = [round(quartiles[0], 3),
                                                     round(quartiles[2], 3)]
    if not args.state_only:
        results["image_2cam"] = image_cached_case(trials, 5 if quick else 15, peak)
        results["image_2cam_trainable_small_cnn"] = image_pixels_case(
            "small_cnn", False, trials if not quick else 2, 2 if quick else 5, 1, peak)
    if args.state_only:
        pass
    elif quick:
        results["image_2cam_frozen_shift"] = {"skipped": "slow (seconds per update); run without --quick"}
        results["image_2cam_trainable"] = {"skipped": "slow (seconds per update); run without --quick"}
    else:
        results["image_2cam_frozen_shift"] = image_pixels_case("resnet10", True, 2, 1, 1, peak)
        results["image_2cam_trainable"] = image_pixels_case("resnet10", False, 2, 1, 1, peak)
    memory = buffer_memory_ratio()
    report = {"results": results, **memory,
              "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                          "cpu_count": os.cpu_count(),
                          "peak_matmul_gflops": round(peak["float32"], 1),
                          "peak_matmul_gflops_bf16": round(peak["bfloat16"], 1),
                          "malloc_keeps_freed_memory": allocator_tuned},
              "quick": quick, "wall_s": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{'case':34s} {'updates/s':>10s} {'GFLOP/s':>8s} {'of peak':>8s} {'others':>7s} "
          f"{'vs SB3 wall [IQR]':>22s} {'cpu-time [IQR]':>22s}")
    for name, entry in results.items():
        if "skipped" in entry:
            print(f"{name:34s} skipped: {entry['skipped']}")
            continue
        vs_sb3 = ["", ""]
        for i, key in enumerate(("ratio_to_sb3", "cpu_ratio_to_sb3")):
            if key in entry:
                low, high = entry[f"{key}_quartiles"]
                vs_sb3[i] = f"{entry[key]:.3f}x [{low:.3f}-{high:.3f}]"
        print(f"{name:34s} {entry['updates_per_s']:10.2f} {entry['gflops']:8.1f} "
              f"{entry['fraction_of_peak']:8.1%} {entry['other_processes_cpu_cores']:7.2f} "
              f"{vs_sb3[0]:>22s} {vs_sb3[1]:>22s}")
    print(f"peak matmul float32 {peak['float32']:.1f}, bfloat16 {peak['bfloat16']:.1f} GFLOP/s "
          f"(of peak: against the precision each FLOP ran in); 100k two-camera buffer / raw uint8 images: "
          f"{memory['image_buffer_bytes_ratio']:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
