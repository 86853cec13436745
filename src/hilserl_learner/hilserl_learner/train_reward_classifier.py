"""Train the reward classifier on labelled demo bags; report accuracy, FPR and FNR; save it.

    python -m hilserl_learner.train_reward_classifier runs/demos/bags --cameras front,wrist \\
        --out runs/classifier [--labels ground_truth|last_k] [--k 5] [--target-fpr 0.01]

Frames: every frame of every labelled episode (``bag_demos.read_episodes``; the images of
``--cameras``, at ``--image-size``). Labels:

- ``ground_truth``: the frame's own ``Reward.success`` (the simulator's; what a sim bag has);
- ``last_k``: the last ``k`` frames of each successful episode are positive, everything else
  negative (what a person's labels give on a real robot: record episodes that end holding the
  success, e.g. ``record_after_success``).

Episodes (not frames) are split three ways: training, validation (``--validation`` of the
rest) and held out (``--held-out``, the test), so validation and held-out frames come from
unseen episodes. Training samples balanced batches with random-shift augmentation; the
decision threshold is the lowest one whose false-positive rate on the validation frames is at
most ``--target-fpr``, and the held-out rates are measured at that threshold. Written:
``classifier.safetensors`` + ``classifier.json`` (configuration, threshold, held-out,
validation and training rates, frame counts).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from hilserl_learner.bag_demos import BagDemoError, find_bags, read_episodes
from hilserl_policy.config import EncoderConfig, ObservationSpec
from hilserl_policy.reward_classifier import (
    ClassifierConfig,
    RewardClassifier,
    choose_threshold,
    rates,
    save_classifier,
    train_classifier,
)

LABEL_RULES = ("ground_truth", "last_k")


def labelled_frames(paths, cameras: tuple[str, ...], image_size: int, rule: str = "ground_truth",
                    k: int = 5) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """({camera: (N, S, S, 3) uint8}, labels (N,) bool, episode index (N,)) of every frame."""
    if rule not in LABEL_RULES:
        raise ValueError(f"labels must be one of {LABEL_RULES}, got {rule!r}")
    spec = ObservationSpec(state_dim=0, action_dim=1, camera_names=cameras, image_size=image_size)
    images: dict[str, list] = {c: [] for c in cameras}
    labels, episode_ids = [], []
    episode_index = 0
    for bag in find_bags(paths):
        parts, episodes = read_episodes(bag, spec, state_parts=False)
        for episode in episodes:
            count = len(episode.frames)
            for position, stamp in enumerate(episode.frames):
                for camera in cameras:
                    images[camera].append(parts[camera][stamp])
                if rule == "ground_truth":
                    labels.append(bool(parts["reward"][stamp].success))
                else:
                    labels.append(episode.success and position >= count - k)
                episode_ids.append(episode_index)
            episode_index += 1
    return ({c: np.stack(v) for c, v in images.items()}, np.asarray(labels, bool),
            np.asarray(episode_ids, np.int64))


def split_episodes(episode_ids: np.ndarray, held_out_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out frames: a seeded share of whole episodes (at least one)."""
    episodes = np.unique(episode_ids)
    if len(episodes) < 2:
        raise ValueError(f"need at least 2 episodes to hold some out, got {len(episodes)}")
    count = min(len(episodes) - 1, max(1, int(round(held_out_fraction * len(episodes)))))
    held = np.random.default_rng(seed).choice(episodes, count, replace=False)
    return np.isin(episode_ids, held)


def run(args) -> dict:
    cameras = tuple(c for c in args.cameras.split(",") if c)
    torch.set_num_threads(args.torch_threads)
    start = time.monotonic()
    images, labels, episode_ids = labelled_frames(args.bags, cameras, args.image_size, args.labels, args.k)
    held = split_episodes(episode_ids, args.held_out, args.seed)
    # The threshold is chosen on validation episodes (neither trained on nor tested on).
    validation = np.zeros_like(held)
    if args.validation > 0:
        if len(np.unique(episode_ids[~held])) < 2:
            raise ValueError(f"{len(np.unique(episode_ids))} episodes: too few to train, validate and hold out "
                             "(record more, or --validation 0 to choose the threshold on the training frames)")
        validation[~held] = split_episodes(episode_ids[~held], args.validation, args.seed + 1)
    train = ~held & ~validation
    chooser = validation if args.validation > 0 else train
    print(f"{len(labels)} frames from {len(np.unique(episode_ids))} episodes: {int(labels.sum())} positive; "
          f"training on {int(train.sum())} ({len(np.unique(episode_ids[train]))} episodes), threshold from "
          f"{int(validation.sum())} ({len(np.unique(episode_ids[validation]))}), testing on {int(held.sum())} "
          f"({len(np.unique(episode_ids[held]))})", flush=True)
    torch.manual_seed(args.seed)
    config = ClassifierConfig(camera_names=cameras, image_size=args.image_size,
                              encoder=EncoderConfig(backbone=args.backbone), hold_frames=args.hold_frames)
    model = RewardClassifier(config)

    def progress(step: int, loss: float) -> None:
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}  loss {loss:.4f}  {time.monotonic() - start:.0f}s", flush=True)
    train_classifier(model, {c: a[train] for c, a in images.items()}, labels[train], steps=args.steps,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=progress)

    def probability(mask: np.ndarray) -> np.ndarray:
        return model.probability({c: a[mask] for c, a in images.items()})
    threshold, validation_rates = choose_threshold(probability(chooser), labels[chooser], args.target_fpr)
    model.config.threshold = threshold
    held_rates = rates(probability(held), labels[held], threshold)
    metrics = {"threshold": threshold, "held_out": held_rates, "validation": validation_rates,
               "train": rates(probability(train), labels[train], threshold),
               "frames": {"train": int(train.sum()), "validation": int(validation.sum()),
                          "held_out": int(held.sum()), "positive": int(labels.sum())},
               "labels": args.labels, "target_fpr": args.target_fpr, "wall_s": round(time.monotonic() - start, 1)}
    save_classifier(args.out, model, metrics)
    print(f"held out: accuracy {held_rates['accuracy']:.4f}, false positives {held_rates['false_positive_rate']:.4f}, "
          f"false negatives {held_rates['false_negative_rate']:.4f} at threshold {threshold:.3f}; wrote {args.out}")
    return metrics


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", nargs="+", help="bag folders, or folders of bag folders")
    p.add_argument("--cameras", required=True, help="comma-separated camera names, e.g. front,wrist")
    p.add_argument("--out", required=True, help="folder to write the classifier into")
    p.add_argument("--labels", choices=LABEL_RULES, default="ground_truth")
    p.add_argument("--k", type=int, default=5, help="last_k: positive frames at the end of a success")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--held-out", type=float, default=0.25, help="share of episodes held out (the test set)")
    p.add_argument("--validation", type=float, default=0.15,
                   help="share of the other episodes that chooses the threshold (not trained on; "
                        "0: the training frames choose it)")
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--hold-frames", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=2)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except (BagDemoError, ValueError) as error:
        print(f"train_reward_classifier: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
