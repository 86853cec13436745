"""Forward and hand-written backward of an ensemble of LayerNorm MLPs.

Why a custom autograd function: on a 2-core CPU the critic update is bound
by kernel count and memory passes, not by FLOPs (the matmuls already run at
~95% of the measured peak). Writing the backward by hand lets us

- evaluate the critic for the critic loss *and* for the actor loss in one
  pass over ``2B`` rows, while only the first ``param_grad_rows`` rows feed
  the parameter gradients (the actor loss must move the actions, never the
  critic's weights) -- autograd cannot mask a shared weight's gradient by row;
- compute tanh as 2 sigmoid(2y) - 1 (sigmoid is ~3x cheaper than tanh on CPU)
  and differentiate it from its output, saving nothing else for it.

Layout: layer 1's input is shared by all members, so it is one ``addmm``
against the members' weights side by side (``(in, k * H)``), giving a
``(rows, k, H)`` tensor; later layers are ``baddbmm`` on ``(k, rows, H)``.
LayerNorm is per member and per row, followed by a per-member affine.
"""

from __future__ import annotations

import torch

_EPS = 1e-5


def _affine(activation: str) -> tuple[float, float]:
    """(a, c) with activation(y) = a * f(a * y) + c for the f this module applies:
    tanh(y) = 2 sigmoid(2y) - 1, relu(y) = relu(y)."""
    return (2.0, -1.0) if activation == "tanh" else (1.0, 0.0)


def _fold(weight: torch.Tensor, bias: torch.Tensor, a: float, c: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(a * W, b + c * 1^T W): (a s + c) @ W + b == s @ (a W) + (b + c 1^T W)."""
    if a == 1.0 and c == 0.0:
        return weight, bias
    return weight * a, torch.add(bias, weight.sum(1, keepdim=True), alpha=c)


class EnsembleMLPFunction(torch.autograd.Function):
    """q = MLP_k(x) for k members; see module docstring.

    Inputs: x (rows, in); first_w (in, k*H1); first_b (k*H1,); then lists flattened
    as hidden_w[i] (k, Hi, Hi+1), hidden_b[i] (k, 1, Hi+1), norm_w[j] / norm_b[j]
    (k, 1, Hj) for every hidden layer j, out_w (k, H, O), out_b (k, 1, O).
    Output (k, rows, O).

    Every activation tensor is (k, rows, H) (layer 1 too: a batched matmul
    against the (in, k, H) weight view, so no transposes). For tanh the saved
    activation is s = sigmoid(2y) and tanh(y) = 2s - 1 is folded into the next
    layer's weights and bias (three elementwise passes per layer instead of five).

    ``hidden_dtype=torch.bfloat16`` runs the hidden-to-hidden matmuls (forward,
    input gradient and weight gradient) with bf16 operands and float32
    accumulation; their outputs return to float32 before LayerNorm, and layer 1,
    the output layer, LayerNorms, activations and all gradients stay float32.
    """

    @staticmethod
    def forward(ctx, x, param_grad_rows, activation, n_hidden, hidden_dtype, *params):
        first_w, first_b = params[0], params[1]
        hidden_w = params[2:2 + n_hidden]
        hidden_b = params[2 + n_hidden:2 + 2 * n_hidden]
        n_norm = n_hidden + 1
        norm_w = params[2 + 2 * n_hidden:2 + 2 * n_hidden + n_norm]
        norm_b = params[2 + 2 * n_hidden + n_norm:2 + 2 * n_hidden + 2 * n_norm]
        out_w, out_b = params[-2], params[-1]
        rows, in_dim = x.shape
        k, width = out_w.shape[0], norm_w[0].shape[-1]
        a, c = _affine(activation)
        saved, saved_low = [], []
        low = hidden_dtype is not None and hidden_dtype != torch.float32
        w1 = first_w.view(in_dim, k, width).transpose(0, 1)  # (k, in, H) view
        z = torch.baddbmm(first_b.view(k, 1, width), x.expand(k, rows, in_dim), w1)
        for j in range(n_hidden + 1):
            n, mean, rstd = torch.native_layer_norm(z, (z.shape[-1],), None, None, _EPS)
            s = torch.addcmul(norm_b[j] * a, n, norm_w[j] * a)
            s = torch.sigmoid_(s) if activation == "tanh" else torch.relu_(s)
            saved += [z, n, mean, rstd, s]
            weight, bias = (hidden_w[j], hidden_b[j]) if j < n_hidden else (out_w, out_b)
            weight, bias = _fold(weight, bias, a, c)
            if low and j < n_hidden:
                s_low = s.to(hidden_dtype)
                saved_low.append(s_low)
                z = torch.add(bias, torch.bmm(s_low, weight.to(hidden_dtype)))  # -> float32
            elif j == n_hidden and weight.shape[-1] == 1:
                # A Q head: a batched mat-vec, ~5x faster as multiply + sum than as bmm.
                z = (s * weight.transpose(1, 2)).sum(-1, keepdim=True).add_(bias)
            else:
                z = torch.baddbmm(bias, s, weight)
        ctx.save_for_backward(x, *params, *saved, *saved_low)
        ctx.config = (param_grad_rows, activation, n_hidden, hidden_dtype if low else None)
        return z

    @staticmethod
    def backward(ctx, grad_q):
        rows_p, activation, n_hidden, low_dtype = ctx.config
        tensors = ctx.saved_tensors
        n_params = 2 + 2 * n_hidden + 2 * (n_hidden + 1) + 2
        x, params = tensors[0], tensors[1:1 + n_params]
        saved = tensors[1 + n_params:1 + n_params + 5 * (n_hidden + 1)]
        saved_low = tensors[1 + n_params + 5 * (n_hidden + 1):]
        first_w = params[0]
        hidden_w = params[2:2 + n_hidden]
        n_norm = n_hidden + 1
        norm_w = params[2 + 2 * n_hidden:2 + 2 * n_hidden + n_norm]
        out_w = params[-2]
        want = ctx.needs_input_grad[5:]
        want_params = rows_p > 0 and any(want)
        grads: list[torch.Tensor | None] = [None] * n_params
        rows, in_dim = x.shape
        k, width = out_w.shape[0], norm_w[0].shape[-1]
        a, c = _affine(activation)

        layer = [saved[5 * j:5 * j + 5] for j in range(n_hidden + 1)]
        grad_z = grad_q
        for j in range(n_hidden + 1, -1, -1):
            # grad_z: gradient of layer j's pre-LayerNorm output (j = n_hidden + 1: q).
            if j == 0:
                if want_params:
                    gz = grad_z[:, :rows_p]
                    xt = x[:rows_p].t().expand(k, in_dim, rows_p)
                    grads[0] = torch.bmm(xt, gz).transpose(0, 1).reshape(in_dim, k * width)
                    grads[1] = gz.sum(1).reshape(-1)
                grad_x = None
                if ctx.needs_input_grad[0]:
                    w1t = first_w.view(in_dim, k, width).permute(1, 2, 0)  # (k, H, in)
                    grad_x = torch.bmm(grad_z, w1t).sum(0)
                break
            s_prev = layer[j - 1][4]
            weight = hidden_w[j - 1] if j <= n_hidden else out_w
            w_index = 2 + j - 1 if j <= n_hidden else n_params - 2
            b_index = 2 + n_hidden + j - 1 if j <= n_hidden else n_params - 1
            low = low_dtype is not None and j <= n_hidden
            if low:
                s_prev, grad_z_mm = saved_low[j - 1], grad_z.to(low_dtype)
            else:
                grad_z_mm = grad_z
            if want_params:
                gz = grad_z[:, :rows_p]
                g_bias = gz.sum(1, keepdim=True)
                grads[b_index] = g_bias
                # d/dW of (a s + c) @ W: a s^T g + c 1^T g.
                if low:
                    g_w = torch.bmm(s_prev[:, :rows_p].transpose(1, 2), grad_z_mm[:, :rows_p])
                    grads[w_index] = torch.add(g_bias * c, g_w, alpha=a)  # -> float32
                elif weight.shape[-1] == 1:  # a Q head: multiply + sum, not a bmm
                    g_w = (s_prev[:, :rows_p] * gz).sum(1).unsqueeze(-1)
                    grads[w_index] = torch.add(g_bias * c, g_w, alpha=a) if c != 0.0 else g_w
                elif c != 0.0:
                    grads[w_index] = torch.baddbmm(g_bias, s_prev[:, :rows_p].transpose(1, 2), gz,
                                                   beta=c, alpha=a)
                else:
                    grads[w_index] = torch.bmm(s_prev[:, :rows_p].transpose(1, 2), gz)
            if weight.shape[-1] == 1:  # a Q head: the outer product is a broadcast multiply
                grad_s = grad_z * (weight.transpose(1, 2) * a)
            elif low:
                grad_s = torch.bmm(grad_z_mm, (weight.transpose(1, 2) * a).to(low_dtype)).float()
            else:
                grad_s = torch.bmm(grad_z, weight.transpose(1, 2) * a)
            z, n, mean, rstd, s = layer[j - 1]
            if activation == "tanh":  # s = sigmoid(y2), y2 = a (n * gamma + beta)
                grad_y = torch.ops.aten.sigmoid_backward(grad_s, s)
            else:
                grad_y = torch.ops.aten.threshold_backward(grad_s, s, 0.0)
            if want_params:
                gy = grad_y[:, :rows_p]
                g_gamma = (gy * n[:, :rows_p]).sum(1, keepdim=True)
                g_beta = gy.sum(1, keepdim=True)
                if a != 1.0:
                    g_gamma.mul_(a)
                    g_beta.mul_(a)
                grads[2 + 2 * n_hidden + j - 1] = g_gamma
                grads[2 + 2 * n_hidden + n_norm + j - 1] = g_beta
            grad_n = grad_y * (norm_w[j - 1] * a)
            grad_z = torch.ops.aten.native_layer_norm_backward(
                grad_n, z, (z.shape[-1],), mean, rstd, None, None, [True, False, False])[0]
        grads = [g if w else None for g, w in zip(grads, want)]
        return (grad_x, None, None, None, None, *grads)


class _FastTanh(torch.autograd.Function):
    """tanh(y) = 2 sigmoid(2y) - 1 (same values to ~1e-7, ~2x cheaper on CPU)."""

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


def ensemble_forward_autograd(x: torch.Tensor, activation: str, n_hidden: int,
                              hidden_dtype: torch.dtype | None, *params: torch.Tensor
                              ) -> torch.Tensor:
    """The same ensemble as ``EnsembleMLPFunction`` (same parameter layout, same
    (k, rows, H) activations) in plain PyTorch ops differentiated by autograd."""
    first_w, first_b = params[0], params[1]
    hidden_w = params[2:2 + n_hidden]
    hidden_b = params[2 + n_hidden:2 + 2 * n_hidden]
    n_norm = n_hidden + 1
    norm_w = params[2 + 2 * n_hidden:2 + 2 * n_hidden + n_norm]
    norm_b = params[2 + 2 * n_hidden + n_norm:2 + 2 * n_hidden + 2 * n_norm]
    out_w, out_b = params[-2], params[-1]
    rows, in_dim = x.shape
    k, width = out_w.shape[0], norm_w[0].shape[-1]
    act = fast_tanh if activation == "tanh" else torch.relu
    low = hidden_dtype is not None and hidden_dtype != torch.float32
    w1 = first_w.view(in_dim, k, width).transpose(0, 1)  # (k, in, H) view
    z = torch.baddbmm(first_b.view(k, 1, width), x.expand(k, rows, in_dim), w1)
    for j in range(n_hidden + 1):
        n = torch.nn.functional.layer_norm(z, (z.shape[-1],), None, None, _EPS)
        h = act(torch.addcmul(norm_b[j], n, norm_w[j]))
        if j < n_hidden:
            if low:
                z = torch.add(hidden_b[j], torch.bmm(h.to(hidden_dtype),
                                                     hidden_w[j].to(hidden_dtype)))
            else:
                z = torch.baddbmm(hidden_b[j], h, hidden_w[j])
        elif out_w.shape[-1] == 1:  # a Q head: mat-vec as multiply + sum
            z = (h * out_w.transpose(1, 2)).sum(-1, keepdim=True) + out_b
        else:
            z = torch.baddbmm(out_b, h, out_w)
    return z
