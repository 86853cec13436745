"""Reward classifier: learns a synthetic separable set, threshold for a target false-positive
rate, the hold rule, and a safetensors + JSON round trip that refuses a mismatched file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hilserl_testing import classifier_test_config as small_config
from hilserl_testing import separable_frames as synthetic
from hilserl_policy.reward_classifier import (
    ClassifierConfig,
    RewardClassifier,
    SuccessHold,
    choose_threshold,
    load_classifier,
    rates,
    save_classifier,
    train_classifier,
)

def test_learns_a_separable_set_and_picks_a_threshold_for_the_target_fpr(tmp_path):
    torch.manual_seed(0)
    images, labels = synthetic(400, seed=1)
    model = RewardClassifier(small_config())
    losses = train_classifier(model, images, labels, steps=150, batch_size=32, lr=1e-3, seed=0)
    assert np.mean(losses[-20:]) < 0.25 * np.mean(losses[:20])
    held_images, held_labels = synthetic(300, seed=2)
    probs = model.probability(held_images)
    threshold, measured = choose_threshold(probs, held_labels, target_fpr=0.01)
    print(f"held out: {measured} at threshold {threshold:.3f}")
    assert measured["false_positive_rate"] <= 0.01 and measured["accuracy"] >= 0.95
    assert measured == rates(probs, held_labels, threshold)
    # One frame at a time gives the same probabilities.
    assert model.probability({c: a[7] for c, a in held_images.items()}) == pytest.approx(probs[7], abs=1e-5)

    model.config.threshold = threshold
    save_classifier(tmp_path / "clf", model, {"held_out": measured})
    loaded, metrics = load_classifier(tmp_path / "clf")
    assert metrics["held_out"] == measured and loaded.config.threshold == threshold
    np.testing.assert_allclose(loaded.probability(held_images), probs, atol=1e-6)


def test_choose_threshold_on_known_scores():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 0.95])
    labels = np.array([0, 0, 0, 1, 0, 1, 1], bool)
    threshold, measured = choose_threshold(probs, labels, target_fpr=0.0)
    assert 0.7 < threshold < 0.9  # above the negative at 0.7, below the positive at 0.9
    assert measured == {"accuracy": pytest.approx(6 / 7), "false_positive_rate": 0.0,
                        "false_negative_rate": pytest.approx(1 / 3)}
    threshold, measured = choose_threshold(probs, labels, target_fpr=0.25)
    assert 0.3 < threshold < 0.6 and measured["false_negative_rate"] == 0.0


def test_success_holds_for_k_consecutive_frames():
    hold = SuccessHold(threshold=0.8, hold_frames=3)
    decisions = [hold.update(p) for p in (0.9, 0.95, 0.5, 0.9, 0.85, 0.99, 0.99)]
    assert decisions == [False, False, False, False, False, True, True]
    hold.reset()
    assert hold.update(0.99) is False


def test_load_refuses_what_does_not_fit(tmp_path):
    model = RewardClassifier(small_config())
    save_classifier(tmp_path / "a", model)
    meta = json.loads((tmp_path / "a" / "classifier.json").read_text())
    meta["config"]["hidden_dim"] = 64
    (tmp_path / "a" / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit the configuration"):
        load_classifier(tmp_path / "a")
    with pytest.raises(ValueError, match="no classifier.safetensors"):
        load_classifier(tmp_path / "missing")
    with pytest.raises(ValueError, match="at least one camera"):
        ClassifierConfig(camera_names=())
    with pytest.raises(ValueError, match="both classes"):
        train_classifier(model, synthetic(4, 0)[0], np.zeros(4, bool), steps=1)
