"""The critic ensemble's hand-written backward against the same network differentiated
by plain autograd (``EnsembleMLP.backward_mode = "autograd"``): same outputs, same
input and parameter gradients, the same RLPD losses and gradients."""

import copy

import pytest
import torch

from hilserl_learner.config import LearnerConfig, RLPDConfig
from hilserl_learner.rlpd import RLPDAgent
from hilserl_policy.config import CriticConfig, NetworkConfig, ObservationSpec
from hilserl_policy.networks import EnsembleMLP


def twin_ensembles(members: int, activation: str, precision: str = "float32"):
    torch.manual_seed(0)
    custom = EnsembleMLP(members, 9, (32, 24, 16), 1, activation, precision)
    with torch.no_grad():  # non-trivial LayerNorm affine and biases
        for p in [*custom.norm_weights, *custom.norm_biases, *custom.hidden_biases]:
            p.uniform_(0.5, 1.5)
        custom.first_bias.uniform_(-0.5, 0.5)
    plain = copy.deepcopy(custom)
    plain.backward_mode = "autograd"
    return custom, plain


def outputs_and_grads(net: EnsembleMLP, x: torch.Tensor, weights: torch.Tensor, **kwargs):
    x = x.clone().requires_grad_(True)
    out = net(x, **kwargs)
    (out * weights).sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("kwargs", [{}, {"param_grad_rows": 20}, {"param_grad_rows": 0},
                                    {"detach_params": True},
                                    {"members": torch.tensor([3, 0])}])
def test_autograd_path_matches_hand_written_backward(activation, kwargs):
    custom, plain = twin_ensembles(4, activation)
    x = torch.randn(48, 9)
    rows = 2 if "members" in kwargs else 4
    weights = torch.randn(rows, 48, 1)
    out_c, gx_c, g_c = outputs_and_grads(custom, x, weights, **kwargs)
    out_p, gx_p, g_p = outputs_and_grads(plain, x, weights, **kwargs)
    torch.testing.assert_close(out_p, out_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_p, gx_c, rtol=1e-4, atol=1e-6)
    masked = kwargs.get("param_grad_rows") == 0 or kwargs.get("detach_params")
    for name, grad in g_c.items():
        if masked:
            assert grad is None and g_p[name] is None, name
        else:
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(g_p[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_row_masked_gradients_differ_from_unmasked():
    """The mask matters: the same rows without it give other parameter gradients
    (so the comparison above would catch a path that ignored it)."""
    _, plain = twin_ensembles(3, "tanh")
    x, weights = torch.randn(40, 9), torch.randn(3, 40, 1)
    masked = outputs_and_grads(plain, x, weights, param_grad_rows=10)[2]
    full = outputs_and_grads(plain, x, weights)[2]
    assert (masked["output_weight"] - full["output_weight"]).norm() > 1e-3


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_autograd_path_bfloat16_within_rounding_of_hand_written(activation):
    """matmul_precision="bfloat16" on both paths: bf16 hidden matmuls, float32 results;
    the two round at slightly different points (the hand-written path rounds the
    sigmoid it folds tanh into), so they agree to bf16 precision, not bit for bit."""
    custom, plain = twin_ensembles(3, activation, "bfloat16")
    x, weights = torch.randn(64, 9), torch.randn(3, 64, 1)
    out_c, gx_c, g_c = outputs_and_grads(custom, x, weights, param_grad_rows=32)
    out_p, gx_p, g_p = outputs_and_grads(plain, x, weights, param_grad_rows=32)
    assert out_p.dtype == torch.float32
    torch.testing.assert_close(out_p, out_c, rtol=0.02, atol=0.02)
    assert (gx_p - gx_c).norm() <= 0.03 * gx_c.norm()
    for name, grad in g_c.items():
        assert g_p[name].dtype == torch.float32
        assert (g_p[name] - grad).norm() <= 0.03 * grad.norm() + 1e-6, name


@pytest.mark.parametrize("num_critics", [2, 10])
def test_rlpd_full_update_same_losses_and_gradients(num_critics, monkeypatch):
    """One critic+actor update of the RLPD agent: the same losses and the same
    gradient for every trainable tensor whichever path differentiates the ensemble."""
    spec = ObservationSpec(state_dim=5, action_dim=3)
    config = LearnerConfig(spec=spec, networks=NetworkConfig(
        critic=CriticConfig(hidden_dims=(32, 32), num_critics=num_critics,
                            target_subset_size=2)),
        rlpd=RLPDConfig(critic_actor_ratio=1, batch_size=16))
    gen = torch.Generator().manual_seed(3)
    obs, nxt = torch.randn(16, 5, generator=gen), torch.randn(16, 5, generator=gen)
    actions = torch.rand(16, 3, generator=gen) * 2 - 1
    from hilserl_learner.buffers import TransitionBatch
    batch = TransitionBatch(
        observations={"state": obs}, actions=actions,
        gripper_actions=torch.zeros(16, dtype=torch.int64),
        rewards=torch.linspace(0, 1, 16), gripper_penalties=torch.zeros(16),
        next_observations={"state": nxt}, terminated=torch.zeros(16),
        truncated=torch.zeros(16), sources=torch.zeros(16, dtype=torch.int64))
    results = []
    for mode in ("custom", "autograd"):
        agent = RLPDAgent(config)
        agent.critic.ensemble.backward_mode = mode
        agent.target_critic.ensemble.backward_mode = mode
        captured = {}
        monkeypatch.setattr(agent.optimizer, "step", lambda a=agent, c=captured: c.update(
            {n: p.grad.clone() for m, mod in a.modules().items()
             for n, p in ((f"{m}.{k}", q) for k, q in mod.named_parameters())
             if p.grad is not None}))
        torch.manual_seed(11)
        metrics = agent.update(batch)
        results.append((metrics, captured))
    (m_c, g_c), (m_p, g_p) = results
    for key in ("losses/critic", "losses/actor", "values/q_mean", "values/target_q_mean"):
        torch.testing.assert_close(m_p[key], m_c[key], rtol=1e-5, atol=1e-6, msg=key)
    assert set(g_p) == set(g_c) and any(n.startswith("actor.") for n in g_c)
    assert any(n.startswith("critic.") for n in g_c)
    for name, grad in g_c.items():
        torch.testing.assert_close(g_p[name], grad, rtol=1e-4, atol=1e-6, msg=name)
