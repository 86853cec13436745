"""Binary success classifier on camera images: the reward on a real robot. No ROS here.

- ``RewardClassifier``: the policy's image encoder (``ObservationEncoder``: per-camera
  backbone, spatial embeddings, latent; same ``EncoderConfig``) and a small MLP to one
  logit. Input: uint8 (B, H, W, 3) per camera, as the replay buffer and the actor hold them.
- ``train_classifier``: class-balanced minibatches (positives are rare), random-shift
  augmentation, Adam; returns the per-epoch losses.
- ``choose_threshold``: the lowest decision threshold whose false-positive rate on held-out
  frames is at most the target (false positives reward the policy for failing, which is what
  breaks training, per the HIL-SERL authors), and the rates it gives.
- ``SuccessHold``: a frame counts as success only after ``hold_frames`` consecutive frames
  above the threshold (against flicker); reset per episode.
- ``save_classifier`` / ``load_classifier``: safetensors weights beside a JSON with the
  configuration, the threshold and the measured rates. No pickle anywhere.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hilserl_policy.config import EncoderConfig, ObservationSpec, config_from_dict, config_to_dict
from hilserl_policy.encoders import ObservationEncoder

WEIGHTS_FILE, CONFIG_FILE = "classifier.safetensors", "classifier.json"
FORMAT = "hilserl-reward-classifier/1"


@dataclasses.dataclass
class ClassifierConfig:
    camera_names: tuple[str, ...] = ("front",)
    image_size: int = 128
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    hidden_dim: int = 256
    threshold: float = 0.5  # decision threshold on the success probability (choose_threshold sets it)
    hold_frames: int = 3  # consecutive frames above the threshold before a success counts

    def __post_init__(self) -> None:
        self.camera_names = tuple(self.camera_names)
        if not self.camera_names:
            raise ValueError("ClassifierConfig.camera_names: the classifier needs at least one camera")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"ClassifierConfig.threshold must be in (0, 1), got {self.threshold}")
        if self.hold_frames < 1:
            raise ValueError(f"ClassifierConfig.hold_frames must be >= 1, got {self.hold_frames}")

    @property
    def spec(self) -> ObservationSpec:
        return ObservationSpec(state_dim=0, action_dim=1, camera_names=self.camera_names,
                               image_size=self.image_size)


class RewardClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.encoder = ObservationEncoder(config.spec, config.encoder)
        self.head = nn.Sequential(nn.Linear(self.encoder.output_dim, config.hidden_dim),
                                  nn.LayerNorm(config.hidden_dim), nn.ReLU(),
                                  nn.Linear(config.hidden_dim, 1))

    def forward(self, images: dict[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """Logits (B,) of success from uint8 images (B, H, W, 3) per camera."""
        return self.head(self.encoder(images, augment=augment)).squeeze(-1)

    @torch.no_grad()
    def probability(self, images: dict[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Success probability per frame of uint8 arrays (N, H, W, 3) (or one frame (H, W, 3))."""
        single = next(iter(images.values())).ndim == 3
        arrays = {c: (images[c][None] if single else images[c]) for c in self.config.camera_names}
        was_training = self.training
        self.eval()
        out = []
        count = next(iter(arrays.values())).shape[0]
        for start in range(0, count, batch_size):
            batch = {c: torch.from_numpy(np.ascontiguousarray(a[start:start + batch_size]))
                     for c, a in arrays.items()}
            out.append(torch.sigmoid(self(batch)).float().numpy())
        self.train(was_training)
        probs = np.concatenate(out) if out else np.zeros(0, np.float32)
        return probs[0] if single else probs


def balanced_batches(labels: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator):
    """Index batches with half positives and half negatives (drawn with replacement)."""
    positives, negatives = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError(f"training needs both classes: {len(positives)} positive and "
                         f"{len(negatives)} negative frames")
    half = batch_size // 2
    for _ in range(steps):
        yield np.concatenate([rng.choice(positives, half), rng.choice(negatives, batch_size - half)])


def train_classifier(model: RewardClassifier, images: dict[str, np.ndarray], labels: np.ndarray,
                     steps: int = 500, batch_size: int = 64, lr: float = 3e-4, seed: int = 0,
                     progress=None) -> list[float]:
    """Train ``model`` on uint8 frames and boolean labels; returns the loss of each step."""
    labels = np.asarray(labels, bool)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for step, index in enumerate(balanced_batches(labels, batch_size, steps, rng)):
        batch = {c: torch.from_numpy(images[c][index]) for c in model.config.camera_names}
        target = torch.from_numpy(labels[index].astype(np.float32))
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch, augment=True).float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    return losses


def rates(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Frame accuracy, false-positive and false-negative rates at ``threshold``."""
    labels = np.asarray(labels, bool)
    predicted = np.asarray(probabilities) >= threshold
    negatives, positives = max(int((~labels).sum()), 1), max(int(labels.sum()), 1)
    return {"accuracy": float((predicted == labels).mean()),
            "false_positive_rate": float((predicted & ~labels).sum() / negatives),
            "false_negative_rate": float((~predicted & labels).sum() / positives)}


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray, target_fpr: float = 0.01
                     ) -> tuple[float, dict[str, float]]:
    """Lowest threshold with false-positive rate <= ``target_fpr`` on these frames (fewest
    false negatives under that bound), and its rates. Candidate thresholds sit halfway between
    sorted distinct probabilities."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels, bool)
    values = np.unique(probabilities)
    candidates = np.concatenate([[values[0] / 2 if values[0] > 0 else 1e-6],
                                 (values[:-1] + values[1:]) / 2, [min(values[-1] + 1e-6, 1 - 1e-9)]])
    for threshold in candidates:
        measured = rates(probabilities, labels, threshold)
        if measured["false_positive_rate"] <= target_fpr:
            return float(np.clip(threshold, 1e-6, 1 - 1e-6)), measured
    threshold = 1 - 1e-6
    return threshold, rates(probabilities, labels, threshold)


class SuccessHold:
    """Success only after ``hold_frames`` consecutive frames at or above ``threshold``."""

    def __init__(self, threshold: float, hold_frames: int):
        self.threshold, self.hold_frames = threshold, hold_frames
        self.run = 0

    def reset(self) -> None:
        self.run = 0

    def update(self, probability: float) -> bool:
        self.run = self.run + 1 if probability >= self.threshold else 0
        return self.run >= self.hold_frames


def save_classifier(directory: str | Path, model: RewardClassifier, metrics: dict | None = None) -> Path:
    """Weights (safetensors) and configuration + metrics (JSON) into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(
        {"format": FORMAT, "config": config_to_dict(model.config), "metrics": metrics or {}}, indent=2))
    return directory


def load_classifier(directory: str | Path) -> tuple[RewardClassifier, dict]:
    """The classifier saved in ``directory`` and its metrics; a ValueError names what is wrong."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise ValueError(f"{directory}: no {name} (save_classifier writes both)")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory / CONFIG_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
    model = RewardClassifier(config_from_dict(ClassifierConfig, meta["config"]))
    tensors = load_file(str(directory / WEIGHTS_FILE))
    expected = model.state_dict()
    wrong = sorted(k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape)
    extra = sorted(set(tensors) - set(expected))
    if wrong or extra:
        raise ValueError(f"{directory / WEIGHTS_FILE}: does not fit the configuration "
                         f"(missing or mis-shaped {wrong[:5]}, unexpected {extra[:5]})")
    model.load_state_dict(tensors)
    model.eval()
    return model, meta.get("metrics", {})
