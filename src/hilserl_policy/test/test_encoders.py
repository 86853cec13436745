"""Image encoders, spatial embeddings, random shift and pretrained weight loading."""

import pytest
import torch
import torch.nn.functional as F

from hilserl_policy.config import EncoderConfig, ObservationSpec
from hilserl_policy.encoders import (
    ImageHead,
    ObservationEncoder,
    dropout_keep_mask,
    ResNet10,
    feature_key,
    random_shift,
    save_backbone_weights,
)


def test_random_shift_equals_replicate_pad_and_crop():
    torch.manual_seed(0)
    images = torch.randint(0, 255, (6, 10, 12, 3), dtype=torch.uint8)
    pad = 3
    torch.manual_seed(5)
    shifted = random_shift(images, pad)
    torch.manual_seed(5)
    offsets = torch.randint(0, 2 * pad + 1, (6, 2))
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
    for b in range(6):
        dy, dx = offsets[b].tolist()
        crop = padded[b, :, dy:dy + 10, dx:dx + 12].permute(1, 2, 0).to(torch.uint8)
        assert torch.equal(shifted[b], crop)
    assert shifted.dtype == torch.uint8
    # Some images actually moved.
    assert sum(not torch.equal(shifted[b], images[b]) for b in range(6)) >= 4


def test_resnet10_shape_and_parameter_count():
    net = ResNet10()
    out = net(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, 512, 4, 4)
    n_params = sum(p.numel() for p in net.parameters())
    assert 4.8e6 < n_params < 5.0e6  # ResNet-10 conv stack (ResNet-18 has 11.2M)


def spec_two_cams():
    return ObservationSpec(state_dim=5, action_dim=3, camera_names=("front", "wrist"),
                           image_size=32)


def test_observation_encoder_output_and_gradients():
    cfg = EncoderConfig(small_cnn_channels=(8, 8), image_latent_dim=16, state_latent_dim=4)
    enc = ObservationEncoder(spec_two_cams(), cfg)
    assert enc.feature_shapes["front"] == (8, 8, 8)
    obs = {"state": torch.randn(3, 5),
           "front": torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8),
           "wrist": torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)}
    out = enc(obs, augment=True)
    assert out.shape == (3, 2 * 16 + 4) == (3, enc.output_dim)
    assert out.abs().max() <= 1.0  # tanh output
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_frozen_pretrained_backbone_loads_and_never_changes(tmp_path):
    torch.manual_seed(3)
    donor = ResNet10()
    path = tmp_path / "resnet10.safetensors"
    save_backbone_weights(donor, path)
    cfg = EncoderConfig(backbone="resnet10", pretrained_path=str(path), freeze_backbone=True)
    enc = ObservationEncoder(ObservationSpec(action_dim=2, camera_names=("cam",), image_size=64), cfg)
    for name, value in donor.state_dict().items():
        assert torch.equal(enc.backbones["cam"].state_dict()[name], value)
    enc.train()
    assert not enc.backbones["cam"].training  # frozen backbone stays in inference mode
    obs = {"cam": torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8)}
    enc(obs).sum().backward()
    assert all(p.grad is None for p in enc.backbones["cam"].parameters())
    assert enc.heads["cam"].linear.weight.grad is not None
    # Cached backbone features give the same encoding as the images (dropout off).
    enc.eval()
    maps = enc.backbone_features(obs, augment=False)
    torch.testing.assert_close(enc({feature_key("cam"): maps["cam"]}), enc(obs))


def test_pretrained_weights_errors_name_the_file(tmp_path):
    bad = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file
    save_file({"stem.0.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="wrong.safetensors"):
        ObservationEncoder(ObservationSpec(action_dim=2, camera_names=("c",), image_size=32),
                           EncoderConfig(backbone="resnet10", pretrained_path=str(bad)))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="garbage.safetensors"):
        ObservationEncoder(ObservationSpec(action_dim=2, camera_names=("c",), image_size=32),
                           EncoderConfig(backbone="resnet10", pretrained_path=str(garbage)))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        ObservationEncoder(ObservationSpec(action_dim=2, camera_names=("c",), image_size=32),
                           EncoderConfig(backbone="resnet10",
                                         pretrained_path=str(tmp_path / "missing.safetensors")))


def test_state_only_encoder_is_identity():
    enc = ObservationEncoder(ObservationSpec(state_dim=4, action_dim=2), EncoderConfig())
    state = torch.randn(3, 4)
    assert enc.output_dim == 4 and torch.equal(enc({"state": state}), state)


def test_dropout_keep_mask_rate_and_independence():
    torch.manual_seed(0)
    keep, p_eff = dropout_keep_mask((512, 1000), 0.1)
    assert keep.dtype == torch.bool and keep.shape == (512, 1000)
    assert abs(p_eff - 0.1) < 1e-4
    assert abs(1.0 - keep.float().mean().item() - p_eff) < 0.003
    # Lanes of one 64-bit draw are independent: neighbours agree as often as chance says.
    flat = keep.flatten().float()
    both_dropped = ((1 - flat[0::4]) * (1 - flat[1::4])).mean().item()
    assert abs(both_dropped - p_eff ** 2) < 0.003
    assert dropout_keep_mask((7,), 0.5)[0].shape == (7,)


@pytest.mark.parametrize("dropout", [False, True])
def test_bfloat16_head_is_close_to_float32(dropout):
    """Mixed-precision head: same parameters, outputs and gradients within bf16 rounding."""
    torch.manual_seed(0)
    heads = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        heads[precision] = ImageHead(64, 4, 4, 8, 32, 0.1, precision)
    features = torch.randn(16, 64, 4, 4).half()
    outs, grads = {}, {}
    for precision, head in heads.items():
        torch.manual_seed(3)  # same dropout mask for both
        out = head(features, dropout=dropout)
        assert out.dtype == torch.float32
        (out * torch.linspace(-1, 1, 32)).sum().backward()
        outs[precision] = out.detach()
        grads[precision] = {n: p.grad for n, p in head.named_parameters()}
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
                   for p in head.parameters())
    torch.testing.assert_close(outs["bfloat16"], outs["float32"], atol=0.03, rtol=0.03)
    for name, ref in grads["float32"].items():
        got = grads["bfloat16"][name]
        assert (got - ref).norm() <= 0.03 * ref.norm() + 1e-6, name


def test_head_precision_is_validated():
    with pytest.raises(ValueError, match="EncoderConfig.head_precision"):
        EncoderConfig(head_precision="float16")


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet10"])
def test_bfloat16_backbone_is_close_to_float32(backbone):
    """bf16 autocast convolutions: float32 parameters and gradients, results within bf16 rounding."""
    obs = {"state": torch.randn(4, 5),
           "front": torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8),
           "wrist": torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8)}
    outs, grads = {}, {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        cfg = EncoderConfig(backbone=backbone, small_cnn_channels=(16, 16, 16),
                            image_latent_dim=16, state_latent_dim=4, dropout=0.0,
                            backbone_precision=precision, head_precision="float32")
        enc = ObservationEncoder(ObservationSpec(state_dim=5, action_dim=2,
                                                 camera_names=("front", "wrist"), image_size=64), cfg)
        out = enc(obs, augment=False)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        outs[precision] = out.detach()
        grads[precision] = {n: p.grad for n, p in enc.named_parameters()}
        assert all(p.dtype == torch.float32 for p in enc.parameters())
    torch.testing.assert_close(outs["bfloat16"], outs["float32"], atol=0.05, rtol=0.05)
    for name, ref in grads["float32"].items():
        got = grads["bfloat16"][name]
        assert got.dtype == torch.float32
        # Deep bf16 conv stacks on a 4-image batch: a few % (small CNN) to ~18% (ResNet-10
        # stem) relative error, direction kept (cosine >= 0.98 measured).
        assert torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), 0) > 0.97, name
        assert (got - ref).norm() <= 0.25 * ref.norm() + 1e-6, name
