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


def _activate(y2_or_y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "tanh":  # the caller passed 2y (pre-doubled affine)
        return torch.sigmoid(y2_or_y).mul_(2.0).sub_(1.0)
    return torch.relu(y2_or_y)


def _activation_backward(grad: torch.Tensor, out: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "tanh":
        return torch.ops.aten.tanh_backward(grad, out)
    return torch.ops.aten.threshold_backward(grad, out, 0.0)


class EnsembleMLPFunction(torch.autograd.Function):
    """q = MLP_k(x) for k members; see module docstring.

    Inputs: x (rows, in); first_w (in, k*H1); first_b (k*H1,); then lists flattened
    as hidden_w[i] (k, Hi, Hi+1), hidden_b[i] (k, 1, Hi+1), norm_w[j] / norm_b[j]
    (k, 1, Hj) for every hidden layer j, out_w (k, H, O), out_b (k, 1, O).
    Output (k, rows, O).
    """

    @staticmethod
    def forward(ctx, x, param_grad_rows, activation, n_hidden, *params):
        first_w, first_b = params[0], params[1]
        hidden_w = params[2:2 + n_hidden]
        hidden_b = params[2 + n_hidden:2 + 2 * n_hidden]
        n_norm = n_hidden + 1
        norm_w = params[2 + 2 * n_hidden:2 + 2 * n_hidden + n_norm]
        norm_b = params[2 + 2 * n_hidden + n_norm:2 + 2 * n_hidden + 2 * n_norm]
        out_w, out_b = params[-2], params[-1]
        rows, k, width = x.shape[0], out_w.shape[0], norm_w[0].shape[-1]
        scale = 2.0 if activation == "tanh" else 1.0  # tanh(y) = 2 sigmoid(2y) - 1
        saved = []
        z = torch.addmm(first_b, x, first_w).view(rows, k, width)
        n, mean, rstd = torch.native_layer_norm(z, (width,), None, None, _EPS)
        t = _activate(torch.addcmul(norm_b[0].view(k, width) * scale, n,
                                    norm_w[0].view(k, width) * scale), activation)
        saved += [z, n, mean, rstd, t]
        h = t.transpose(0, 1)
        for i in range(n_hidden):
            z = torch.baddbmm(hidden_b[i], h, hidden_w[i])
            n, mean, rstd = torch.native_layer_norm(z, (z.shape[-1],), None, None, _EPS)
            h = _activate(torch.addcmul(norm_b[i + 1] * scale, n, norm_w[i + 1] * scale),
                          activation)
            saved += [z, n, mean, rstd, h]
        q = torch.baddbmm(out_b, h, out_w)
        ctx.save_for_backward(x, *params, *saved)
        ctx.config = (param_grad_rows, activation, n_hidden)
        return q

    @staticmethod
    def backward(ctx, grad_q):
        rows_p, activation, n_hidden = ctx.config
        tensors = ctx.saved_tensors
        n_params = 2 + 2 * n_hidden + 2 * (n_hidden + 1) + 2
        x, params, saved = tensors[0], tensors[1:1 + n_params], tensors[1 + n_params:]
        first_w = params[0]
        hidden_w = params[2:2 + n_hidden]
        n_norm = n_hidden + 1
        norm_w = params[2 + 2 * n_hidden:2 + 2 * n_hidden + n_norm]
        out_w = params[-2]
        want = ctx.needs_input_grad[4:]
        want_params = rows_p > 0 and any(want)
        grads: list[torch.Tensor | None] = [None] * n_params
        k, width = out_w.shape[0], norm_w[0].shape[-1]

        layer = [saved[5 * j:5 * j + 5] for j in range(n_hidden + 1)]
        h_last = layer[-1][4]
        if want_params:
            g_p = grad_q[:, :rows_p]
            grads[-2] = torch.bmm(h_last[:, :rows_p].transpose(1, 2), g_p)
            grads[-1] = g_p.sum(1, keepdim=True)
        if out_w.shape[-1] == 1:  # a Q head: the outer product is a broadcast multiply
            grad_h = grad_q * out_w.transpose(1, 2)  # (k, rows, H)
        else:
            grad_h = torch.bmm(grad_q, out_w.transpose(1, 2))
        for j in range(n_hidden, -1, -1):
            z, n, mean, rstd, t = layer[j]
            first = j == 0
            if first:  # layer-1 tensors are (rows, k, H); grads arrive as (k, rows, H)
                grad_h = grad_h.transpose(0, 1)
            grad_y = _activation_backward(grad_h, t, activation)
            if want_params:
                dims = 0 if first else 1
                gy, nn_ = (grad_y[:rows_p], n[:rows_p]) if first else (
                    grad_y[:, :rows_p], n[:, :rows_p])
                g_gamma = (gy * nn_).sum(dims, keepdim=not first)
                g_beta = gy.sum(dims, keepdim=not first)
                grads[2 + 2 * n_hidden + j] = g_gamma.view_as(norm_w[j])
                grads[2 + 2 * n_hidden + n_norm + j] = g_beta.view_as(norm_w[j])
            gamma = norm_w[j].view(k, width) if first else norm_w[j]
            grad_n = grad_y * gamma
            grad_z = torch.ops.aten.native_layer_norm_backward(
                grad_n, z, (z.shape[-1],), mean, rstd, None, None, [True, False, False])[0]
            if not first:
                h_prev = layer[j - 1][4]
                h_prev = h_prev.transpose(0, 1) if j - 1 == 0 else h_prev
                if want_params:
                    gz = grad_z[:, :rows_p]
                    grads[2 + j - 1] = torch.bmm(h_prev[:, :rows_p].transpose(1, 2), gz)
                    grads[2 + n_hidden + j - 1] = gz.sum(1, keepdim=True)
                grad_h = torch.bmm(grad_z, hidden_w[j - 1].transpose(1, 2))
            else:
                flat = grad_z.reshape(grad_z.shape[0], -1)  # (rows, k * H)
                if want_params:
                    grads[0] = torch.mm(x[:rows_p].t(), flat[:rows_p])
                    grads[1] = flat[:rows_p].sum(0)
                grad_x = torch.mm(flat, first_w.t()) if ctx.needs_input_grad[0] else None
        grads = [g if w else None for g, w in zip(grads, want)]
        return (grad_x, None, None, None, *grads)


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
