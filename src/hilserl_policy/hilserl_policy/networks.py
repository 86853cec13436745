"""Actor, critic ensemble and grasp critic (PyTorch, ROS-free).

Every hidden layer is Linear -> LayerNorm -> activation, as in RLPD/HIL-SERL.
The critic ensemble keeps each member fully independent (the official
HIL-SERL ensemble shares its last layer across members) and evaluates all
members in one batched pass: the first layer is one batched matmul against the
members' weights laid side by side (its input is the same for every member),
the later layers are ``torch.baddbmm`` over stacked weights; autograd
differentiates it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hilserl_policy.config import (
    ActorConfig,
    CriticConfig,
    GraspCriticConfig,
    GripperExplorationConfig,
)


class _FastTanh(torch.autograd.Function):
    """tanh(y) = 2 sigmoid(2y) - 1 (same values to ~1e-7; on CPU sigmoid is ~3x
    cheaper than tanh), differentiated from its output alone."""

    @staticmethod
    def forward(ctx, y):
        out = torch.sigmoid(y * 2.0).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, out)


def fast_tanh(y: torch.Tensor) -> torch.Tensor:
    return _FastTanh.apply(y)


ACTIVATIONS = {"tanh": fast_tanh, "relu": F.relu, "silu": F.silu, "gelu": F.gelu}

# Grasp-critic output index <-> hilserl_msgs/Action gripper command (-1, 0, 1).
GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN = 0, 1, 2
NUM_GRIPPER_ACTIONS = 3


def gripper_index_to_command(index: int) -> int:
    """Grasp-critic index (0 close, 1 stay, 2 open) -> Action.GRIPPER_* (-1, 0, 1)."""
    if index not in (0, 1, 2):
        raise ValueError(f"gripper index must be 0 (close), 1 (stay) or 2 (open), got {index!r}")
    return int(index) - 1


def gripper_command_to_index(command: int) -> int:
    """Action.GRIPPER_* (-1, 0, 1) -> grasp-critic index (0, 1, 2)."""
    if command not in (-1, 0, 1):
        raise ValueError(f"gripper command must be -1, 0 or 1, got {command!r}")
    return int(command) + 1


def gripper_change_penalty(gripper_index: int, gripper_closed: bool, penalty: float) -> float:
    """``penalty`` (<= 0) when grasp-critic index ``gripper_index`` changes the gripper
    state (close an open gripper or open a closed one), else 0. ``gripper_closed``:
    the gripper's commanded state before this command."""
    changes = (gripper_index == GRIPPER_CLOSE and not gripper_closed) or (
        gripper_index == GRIPPER_OPEN and gripper_closed)
    return float(penalty) if changes else 0.0


class MLP(nn.Module):
    """Linear -> LayerNorm -> activation for each hidden width."""

    def __init__(self, input_dim: int, hidden_dims: tuple[int, ...], activation: str):
        super().__init__()
        dims = (input_dim, *hidden_dims)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in hidden_dims)
        self.activation = ACTIVATIONS[activation]
        self.output_dim = dims[-1]
        for linear in self.linears:
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = self.activation(norm(linear(x)))
        return x


def _xavier_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


class EnsembleMLP(nn.Module):
    """``num_members`` independent MLPs on one shared input, evaluated in one pass.

    Output shape is (members, batch, output_dim). ``members`` selects a subset
    (only those are computed); ``detach_params`` evaluates with detached
    weights so that a loss back-propagates to the input only (used by the
    actor loss: the critic's weights get no gradient from it).

    Layout: activations are (members, rows, width) in every layer. Layer 1's
    input is shared by all members; its weight is stored as
    (input, members * width) and read as a (members, input, width) view, so
    layer 1 is one ``baddbmm`` against an expanded (not copied) input; later
    layers are ``baddbmm`` over (members, width, width) weights; LayerNorm is
    per member and per row with a per-member affine. Plain PyTorch ops:
    autograd differentiates it (a hand-written backward was measured no
    faster, docs/learning_core.md).
    """

    def __init__(self, num_members: int, input_dim: int, hidden_dims: tuple[int, ...],
                 output_dim: int, activation: str, hidden_precision: str = "float32"):
        super().__init__()
        self.num_members = num_members
        # Hidden-to-hidden matmuls with bfloat16 operands (float32 accumulation and
        # results; layer 1, the output layer, LayerNorms and gradients stay float32).
        self.hidden_dtype = torch.bfloat16 if hidden_precision == "bfloat16" else None
        self.input_dim = input_dim
        self.hidden_dims = tuple(hidden_dims)
        self.output_dim = output_dim
        if activation not in ACTIVATIONS:
            raise ValueError(f"ensemble activation must be one of {tuple(ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        first = hidden_dims[0]
        self.first_weight = nn.Parameter(torch.empty(input_dim, num_members * first))
        self.first_bias = nn.Parameter(torch.zeros(num_members * first))
        self.hidden_weights = nn.ParameterList()
        self.hidden_biases = nn.ParameterList()
        for a, b in zip(hidden_dims[:-1], hidden_dims[1:]):
            self.hidden_weights.append(nn.Parameter(torch.empty(num_members, a, b)))
            self.hidden_biases.append(nn.Parameter(torch.zeros(num_members, 1, b)))
        # Per-member LayerNorm affine parameters.
        self.norm_weights = nn.ParameterList(
            nn.Parameter(torch.ones(num_members, 1, d)) for d in hidden_dims)
        self.norm_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(num_members, 1, d)) for d in hidden_dims)
        self.output_weight = nn.Parameter(torch.empty(num_members, hidden_dims[-1], output_dim))
        self.output_bias = nn.Parameter(torch.zeros(num_members, 1, output_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Xavier-uniform per member; every member is drawn independently.
        first = self.hidden_dims[0]
        self.first_weight.uniform_(-1, 1).mul_(_xavier_bound(self.input_dim, first))
        for w in self.hidden_weights:
            w.uniform_(-1, 1).mul_(_xavier_bound(w.shape[1], w.shape[2]))
        self.output_weight.uniform_(-1, 1).mul_(
            _xavier_bound(self.hidden_dims[-1], self.output_dim))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None,
                detach_params: bool = False) -> torch.Tensor:
        """(members, rows, output_dim) for input x (rows, input_dim)."""

        def param(p: torch.Tensor) -> torch.Tensor:
            p = p.detach() if detach_params else p
            return p if members is None else p[members]

        rows, width = x.shape[0], self.hidden_dims[0]
        k = self.num_members if members is None else members.numel()
        w1 = param(self.first_weight.view(self.input_dim, self.num_members, width)
                   .transpose(0, 1))  # (members, input, width) view
        b1 = param(self.first_bias.view(self.num_members, 1, width))
        z = torch.baddbmm(b1, x.expand(k, rows, self.input_dim), w1)
        n_hidden = len(self.hidden_weights)
        weights = [*self.hidden_weights, self.output_weight]
        biases = [*self.hidden_biases, self.output_bias]
        for j in range(n_hidden + 1):
            normed = F.layer_norm(z, (z.shape[-1],))
            h = self.activation(torch.addcmul(param(self.norm_biases[j]), normed,
                                              param(self.norm_weights[j])))
            weight, bias = param(weights[j]), param(biases[j])
            if j < n_hidden and self.hidden_dtype is not None:
                z = torch.add(bias, torch.bmm(h.to(self.hidden_dtype),
                                              weight.to(self.hidden_dtype)))  # -> float32
            elif j == n_hidden and self.output_dim == 1:
                # A Q head: a batched mat-vec, faster as multiply + sum than as bmm.
                z = (h * weight.transpose(1, 2)).sum(-1, keepdim=True) + bias
            else:
                z = torch.baddbmm(bias, h, weight)
        return z


class CriticEnsemble(nn.Module):
    """Q(s, a) for every member: returns (members, batch)."""

    def __init__(self, feature_dim: int, action_dim: int, config: CriticConfig):
        super().__init__()
        self.config = config
        self.num_critics = config.num_critics
        self.ensemble = EnsembleMLP(config.num_critics, feature_dim + action_dim,
                                    config.hidden_dims, 1, config.activation,
                                    config.matmul_precision)

    def forward(self, features: torch.Tensor, actions: torch.Tensor,
                members: torch.Tensor | None = None,
                detach_params: bool = False) -> torch.Tensor:
        x = torch.cat((features, actions), dim=-1)
        return self.ensemble(x, members, detach_params).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """Gaussian with state-dependent std, clipped, then squashed by tanh to [-1, 1]."""

    def __init__(self, feature_dim: int, action_dim: int, config: ActorConfig):
        super().__init__()
        self.action_dim = action_dim
        self.trunk = MLP(feature_dim, config.hidden_dims, config.activation)
        self.head = nn.Linear(self.trunk.output_dim, 2 * action_dim)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.log_std_min = math.log(config.std_min)
        self.log_std_max = math.log(config.std_max)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and log-std (log-std clipped to log[std_min, std_max])."""
        mean, log_std = self.head(self.trunk(features)).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action in [-1, 1] and its log-probability (batch,)."""
        mean, log_std = self(features)
        noise = torch.randn_like(mean)
        pre_tanh = mean + noise * log_std.exp()
        return torch.tanh(pre_tanh), squashed_gaussian_log_prob(noise, log_std, pre_tanh)

    def mean_action(self, features: torch.Tensor) -> torch.Tensor:
        """Deterministic action for evaluation: tanh of the mean."""
        return torch.tanh(self(features)[0])


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def squashed_gaussian_log_prob(noise: torch.Tensor, log_std: torch.Tensor,
                               pre_tanh: torch.Tensor) -> torch.Tensor:
    """log pi(tanh(u)) for u = mean + std * noise, summed over action dims.

    The tanh Jacobian uses log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)),
    which stays finite where tanh saturates.
    """
    gaussian = -0.5 * noise.square() - log_std - _HALF_LOG_2PI
    log_det = 2.0 * (_LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gaussian - log_det).sum(-1)


class GraspCritic(nn.Module):
    """Q(s, g) for the three gripper commands (close, stay, open): returns (batch, 3)."""

    def __init__(self, feature_dim: int, config: GraspCriticConfig):
        super().__init__()
        self.trunk = MLP(feature_dim, config.hidden_dims, config.activation)
        self.head = nn.Linear(self.trunk.output_dim, NUM_GRIPPER_ACTIONS)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(features))


def select_gripper_action(q_values: torch.Tensor, exploration: GripperExplorationConfig,
                          env_step: int, deterministic: bool,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Gripper index per row of ``q_values`` (batch, 3).

    Greedy when ``deterministic`` (evaluation) or mode "none"; otherwise
    epsilon-greedy or Boltzmann with the value annealed to ``env_step``.
    """
    greedy = q_values.argmax(dim=-1)
    if deterministic or exploration.mode == "none":
        return greedy
    value = exploration.value_at(env_step)
    batch = q_values.shape[0]
    if exploration.mode == "epsilon":
        explore = torch.rand(batch, generator=generator) < value
        random = torch.randint(0, NUM_GRIPPER_ACTIONS, (batch,), generator=generator)
        return torch.where(explore, random, greedy)
    probs = torch.softmax(q_values / value, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
