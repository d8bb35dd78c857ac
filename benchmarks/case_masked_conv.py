"""Masked convolution forward + backward against torch ``conv2d`` with a masked weight.

* ``masked_conv_a`` -- PixelCNN's input layer: 7x7 mask A, 1 -> 64 channels, 28x28, batch 32.
  The input is data, so neither side computes dX (torch: ``x.requires_grad=False``;
  probgen: ``need_dx=False``): forward, dW and db.
* ``masked_conv_b`` -- a hidden layer: 3x3 mask B, 64 -> 64 channels, 28x28, batch 32:
  forward, dX, dW and db.

Both sides: float32, NCHW, the same thread count (the harness), the same upstream gradient.
The ``*_cnhw`` twins run probgen in the channels-outermost layout (``layout="CNHW"``: input
(C, N, H, W), output (C_out, N, H, W)); torch stays NCHW there, so those rows compare layouts as
well as kernels.  probgen runs L2-sized chunks (NCHW: one GEMM per image); with several BLAS threads, on that many
image ranges on threads of its own with BLAS at one thread each (the kernel's docstring).
torch runs the usual PixelCNN recipe ``conv2d(x, W * mask, b, padding=k // 2)`` followed by
``y.backward(dy)`` (dense k x k taps, the masked ones multiplied by zero); probgen runs
:func:`probgen.kernels.masked_conv.masked_conv2d_forward` / ``_backward`` on the packed causal
taps with a :class:`~probgen.kernels.masked_conv.MaskedConvWorkspace` (buffers reused).
"""
from __future__ import annotations

import numpy as np

from ._harness import Case

N, H, W = 32, 28, 28


def _setup(k, c_in, c_out, mask_type, need_dx, layout="NCHW"):
    def setup(quick: bool):
        import torch

        from probgen.kernels.masked_conv import (
            MaskedConvWorkspace,
            conv_mask,
            masked_conv2d_backward,
            masked_conv2d_forward,
            n_causal_taps,
            pack_masked_weight,
        )

        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, c_in, H, W)).astype(np.float32)
        W_full = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
        W_full *= conv_mask(k, mask_type, np.float32)
        b = rng.standard_normal(c_out).astype(np.float32)
        dy = rng.standard_normal((N, c_out, H, W)).astype(np.float32)
        Wp = pack_masked_weight(W_full, mask_type)
        assert Wp.shape[2] == n_causal_taps(k, mask_type)
        ws = MaskedConvWorkspace()
        xp, dyp = x, dy
        if layout == "CNHW":
            xp, dyp = (np.ascontiguousarray(a.transpose(1, 0, 2, 3)) for a in (x, dy))

        def probgen_step():
            y, cache = masked_conv2d_forward(xp, Wp, b, mask_type, workspace=ws, layout=layout)
            return masked_conv2d_backward(dyp, cache, need_dx=need_dx)

        xt = torch.from_numpy(x.copy()).requires_grad_(need_dx)
        Wt = torch.from_numpy(W_full.copy()).requires_grad_(True)
        bt = torch.from_numpy(b.copy()).requires_grad_(True)
        mask = torch.from_numpy(conv_mask(k, mask_type, np.float32))
        dyt = torch.from_numpy(dy.copy())

        def torch_step():
            Wt.grad = bt.grad = xt.grad = None
            y = torch.nn.functional.conv2d(xt, Wt * mask, bt, padding=k // 2)
            y.backward(dyt)

        return probgen_step, torch_step

    return setup


CASES = [
    Case(name="masked_conv_a", shape="7x7 A 1->64 28x28 B=32 no dX", dtype="float32",
         peer="torch conv2d", setup=_setup(7, 1, 64, "A", False), repeats=101, quick_repeats=31),
    Case(name="masked_conv_b", shape="3x3 B 64->64 28x28 B=32", dtype="float32",
         peer="torch conv2d", setup=_setup(3, 64, 64, "B", True), repeats=21, quick_repeats=9),
    Case(name="masked_conv_a_cnhw", shape="7x7 A 1->64 28x28 B=32 no dX", dtype="float32",
         peer="torch conv2d", setup=_setup(7, 1, 64, "A", False, "CNHW"), repeats=101, quick_repeats=31),
    Case(name="masked_conv_b_cnhw", shape="3x3 B 64->64 28x28 B=32", dtype="float32",
         peer="torch conv2d", setup=_setup(3, 64, 64, "B", True, "CNHW"), repeats=21, quick_repeats=9),
]
