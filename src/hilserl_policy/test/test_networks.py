"""Actor, critic ensemble, grasp critic and config: numbers against references."""

import math

import pytest
import torch
import torch.nn.functional as F

from hilserl_policy.config import (
    ActorConfig,
    CriticConfig,
    EncoderConfig,
    GraspCriticConfig,
    GripperExplorationConfig,
    NetworkConfig,
    ObservationSpec,
    config_from_dict,
    config_to_dict,
)
from hilserl_policy.networks import (
    CriticEnsemble,
    EnsembleMLP,
    GraspCritic,
    TanhGaussianActor,
    gripper_command_to_index,
    gripper_index_to_command,
    select_gripper_action,
)


def reference_member(ens: EnsembleMLP, i: int, x: torch.Tensor, act=torch.tanh,
                     detach: bool = False) -> torch.Tensor:
    """Member i computed alone, layer by layer, with plain matmul / F.layer_norm / autograd."""
    keep = (lambda p: p.detach()) if detach else (lambda p: p)
    first = ens.hidden_dims[0]
    w0 = keep(ens.first_weight).view(ens.input_dim, ens.num_members, first)[:, i]
    b0 = keep(ens.first_bias).view(ens.num_members, first)[i]
    h = x @ w0 + b0
    h = act(F.layer_norm(h, (first,), keep(ens.norm_weights[0])[i, 0],
                         keep(ens.norm_biases[0])[i, 0]))
    for j, (w, b) in enumerate(zip(ens.hidden_weights, ens.hidden_biases)):
        h = h @ keep(w)[i] + keep(b)[i, 0]
        h = act(F.layer_norm(h, (h.shape[-1],), keep(ens.norm_weights[j + 1])[i, 0],
                             keep(ens.norm_biases[j + 1])[i, 0]))
    return h @ keep(ens.output_weight)[i] + keep(ens.output_bias)[i, 0]


def make_ensemble(members=5, hidden=(16, 12, 8)):
    torch.manual_seed(0)
    ens = EnsembleMLP(members, 7, hidden, 1, "tanh")
    with torch.no_grad():  # non-trivial LayerNorm affine so the test covers it
        for p in list(ens.norm_weights) + list(ens.norm_biases):
            p.uniform_(0.5, 1.5)
    return ens


def test_ensemble_matches_per_member_reference():
    ens = make_ensemble()
    x = torch.randn(9, 7)
    out = ens(x)
    assert out.shape == (5, 9, 1)
    for i in range(5):
        torch.testing.assert_close(out[i], reference_member(ens, i, x), rtol=1e-5, atol=1e-5)


def test_ensemble_members_are_independent():
    ens = make_ensemble()
    # Distinct weights per member (no shared last layer, unlike the official code).
    assert not torch.allclose(ens.output_weight[0], ens.output_weight[1])
    ens(torch.randn(4, 7))[2].sum().backward()
    for p in ens.parameters():
        grad = p.grad.view(7, 5, -1).transpose(0, 1) if p is ens.first_weight else p.grad
        grad = grad.reshape(5, -1)
        assert grad[2].abs().sum() > 0
        assert torch.count_nonzero(grad[[0, 1, 3, 4]]) == 0


def test_ensemble_subset_and_detached_params():
    ens = make_ensemble()
    x = torch.randn(6, 7, requires_grad=True)
    members = torch.tensor([4, 1])
    torch.testing.assert_close(ens(x, members), ens(x)[members])
    ens(x, detach_params=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in ens.parameters())


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("detach", [False, True])
def test_ensemble_gradients_match_per_member_reference(activation, detach):
    """Input and parameter gradients of the batched ensemble equal those of each
    member computed alone; ``detach_params``: the input gets its gradient, no
    parameter does."""
    torch.manual_seed(0)
    ens = EnsembleMLP(3, 5, (8, 7, 6), 2, activation).double()
    with torch.no_grad():
        for p in list(ens.norm_weights) + list(ens.norm_biases) + list(ens.hidden_biases):
            p.uniform_(0.5, 1.5)
        ens.first_bias.uniform_(-0.5, 0.5)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 6, 2, dtype=torch.float64)
    (ens(x, detach_params=detach) * weights).sum().backward()
    got = {n: p.grad for n, p in ens.named_parameters()}
    got_x = x.grad.clone()

    act = torch.tanh if activation == "tanh" else torch.relu
    ens.zero_grad(set_to_none=True)
    x.grad = None
    ref = torch.stack([reference_member(ens, i, x, act, detach=detach) for i in range(3)])
    torch.testing.assert_close(ens(x).detach(), ref.detach())
    (ref * weights).sum().backward()
    torch.testing.assert_close(got_x, x.grad)
    for name, param in ens.named_parameters():
        if detach:
            assert got[name] is None, name
        else:
            assert torch.count_nonzero(param.grad) > 0, name
            torch.testing.assert_close(got[name], param.grad, msg=name)


def test_critic_ensemble_shape_and_layernorm_everywhere():
    critic = CriticEnsemble(5, 2, CriticConfig(num_critics=10, hidden_dims=(32, 32)))
    q = critic(torch.randn(3, 5), torch.rand(3, 2))
    assert q.shape == (10, 3)
    assert len(critic.ensemble.norm_weights) == 2  # one LayerNorm per hidden layer


def test_actor_log_prob_matches_torch_distributions():
    torch.manual_seed(1)
    actor = TanhGaussianActor(4, 3, ActorConfig(hidden_dims=(16,)))
    feats = torch.randn(64, 4)
    torch.manual_seed(2)
    actions, log_probs = actor.sample(feats)
    mean, log_std = actor(feats)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    expected = dist.log_prob(actions.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(log_probs, expected, rtol=1e-3, atol=1e-3)
    assert actions.abs().max() < 1.0
    torch.testing.assert_close(actor.mean_action(feats), torch.tanh(mean))


def test_actor_std_is_clipped_and_state_dependent():
    actor = TanhGaussianActor(2, 1, ActorConfig(hidden_dims=(8,), std_min=0.1, std_max=2.0))
    with torch.no_grad():
        actor.head.bias[1] = 100.0
    assert math.isclose(actor(torch.randn(5, 2))[1].exp().max().item(), 2.0, rel_tol=1e-6)
    with torch.no_grad():
        actor.head.bias[1] = -100.0
    assert math.isclose(actor(torch.randn(5, 2))[1].exp().min().item(), 0.1, rel_tol=1e-6)
    with torch.no_grad():
        actor.head.bias[1] = 0.0
    stds = actor(torch.randn(5, 2) * 3)[1]
    assert stds.std() > 0  # depends on the input


def test_gripper_selection_greedy_epsilon_boltzmann():
    q = torch.tensor([[0.0, 1.0, 0.5]]).repeat(4000, 1)
    greedy_cfg = GripperExplorationConfig(mode="epsilon", start=1.0, end=1.0)
    assert (select_gripper_action(q, greedy_cfg, 0, deterministic=True) == 1).all()
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(select_gripper_action(q, greedy_cfg, 0, False, gen), minlength=3)
    assert counts.min() > 1200  # epsilon 1: uniform over the three commands
    cold = GripperExplorationConfig(mode="boltzmann", start=1e-3, end=1e-3)
    assert (select_gripper_action(q, cold, 0, False, gen) == 1).all()
    hot = GripperExplorationConfig(mode="boltzmann", start=1.0, end=1.0)
    freq = torch.bincount(select_gripper_action(q, hot, 0, False, gen), minlength=3) / 4000
    expected = torch.softmax(q[0], 0)
    assert torch.allclose(freq, expected, atol=0.03)


def test_gripper_exploration_anneals_linearly():
    cfg = GripperExplorationConfig(mode="epsilon", start=0.3, end=0.1, anneal_steps=100)
    assert cfg.value_at(0) == 0.3
    assert math.isclose(cfg.value_at(50), 0.2)
    assert cfg.value_at(100) == 0.1 and cfg.value_at(10_000) == 0.1


def test_grasp_critic_and_gripper_index_mapping():
    critic = GraspCritic(6, GraspCriticConfig(hidden_dims=(8,)))
    assert critic(torch.randn(2, 6)).shape == (2, 3)
    assert [gripper_index_to_command(i) for i in range(3)] == [-1, 0, 1]
    assert [gripper_command_to_index(c) for c in (-1, 0, 1)] == [0, 1, 2]
    with pytest.raises(ValueError):
        gripper_command_to_index(2)


@pytest.mark.parametrize("cls, kwargs, field", [
    (CriticConfig, {"num_critics": 2, "target_subset_size": 3}, "target_subset_size"),
    (ActorConfig, {"std_min": 1.0, "std_max": 0.5}, "std_max"),
    (ActorConfig, {"activation": "sigmoid"}, "activation"),
    (EncoderConfig, {"dropout": 1.5}, "dropout"),
    (EncoderConfig, {"pretrained_path": "x.safetensors"}, "pretrained_path"),
    (ObservationSpec, {"state_dim": 0}, "state_dim"),
    (GripperExplorationConfig, {"mode": "epsilon", "start": 2.0}, "start"),
])
def test_config_errors_name_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}"):
        cls(**kwargs)


def test_config_round_trip_through_dict():
    cfg = NetworkConfig(critic=CriticConfig(num_critics=10, hidden_dims=(64, 64)))
    restored = config_from_dict(NetworkConfig, config_to_dict(cfg))
    assert restored == cfg and restored.critic.hidden_dims == (64, 64)
    with pytest.raises(ValueError, match="unknown field"):
        config_from_dict(CriticConfig, {"num_critic": 3})


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_bfloat16_hidden_matmuls_close_to_float32(activation):
    """matmul_precision="bfloat16": same parameters (float32), outputs and gradients
    within bf16 rounding of the float32 path, all float32."""
    torch.manual_seed(0)
    ens = EnsembleMLP(3, 5, (64, 64, 64), 1, activation)
    low = EnsembleMLP(3, 5, (64, 64, 64), 1, activation, hidden_precision="bfloat16")
    low.load_state_dict(ens.state_dict())
    x = torch.randn(64, 5)
    weights = torch.randn(3, 64, 1)
    results = []
    for net in (ens, low):
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        (out * weights).sum().backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in net.named_parameters()}))
    (out32, gx32, g32), (out16, gx16, g16) = results
    assert out16.dtype == torch.float32
    torch.testing.assert_close(out16, out32, atol=0.02, rtol=0.02)
    # ReLU: bf16 rounding flips a few near-zero units (measured <= 8% relative); tanh ~1%.
    tol = 0.03 if activation == "tanh" else 0.15
    assert (gx16 - gx32).norm() <= tol * gx32.norm()
    for name, ref in g32.items():
        got = g16[name]
        assert got.dtype == torch.float32
        assert (got - ref).norm() <= tol * ref.norm() + 1e-6, name
        if ref.norm() > 0:
            assert F.cosine_similarity(got.flatten(), ref.flatten(), 0) > 0.98, name


def test_critic_matmul_precision_is_validated():
    with pytest.raises(ValueError, match="CriticConfig.matmul_precision"):
        CriticConfig(matmul_precision="half")
