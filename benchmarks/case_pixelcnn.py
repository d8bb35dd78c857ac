"""One Adam step of a PixelCNN on a batch of 32 binarised 28x28 images against torch (``pixelcnn_step``).

The model (both sides): 7x7 mask-A input convolution 1 -> 64, four residual blocks
(ReLU, 1x1 64 -> 32, ReLU, 3x3 mask B 32 -> 32, ReLU, 1x1 32 -> 64, plus the skip), ReLU,
1x1 64 -> 64, ReLU, 1x1 64 -> 1, Bernoulli NLL from the logits summed over pixels and averaged
over the batch, full backward pass and one Adam update (lr 1e-3, torch's defaults), float32.
probgen's step is what ``PixelCNN.fit`` runs per minibatch; torch's is the common recipe
(``nn.Conv2d`` layers whose weight is multiplied by a fixed mask in ``forward``,
``torch.optim.Adam``, default implementation choice).
"""
from __future__ import annotations

import numpy as np

from ._harness import Case

B, H, W, C, LAYERS = 32, 28, 28, 64, 4


def _data():
    rng = np.random.default_rng(0)
    return (rng.random((B, H, W)) < 0.13).astype(np.uint8)  # MNIST-like pixel density


def _probgen_step(X):
    from probgen.models.pixelcnn import PixelCNN
    from probgen.nn.optim import Adam

    model = PixelCNN((H, W), channels=C, n_layers=LAYERS, kernel_size=3, first_kernel_size=7, levels=2,
                     rng=0, dtype=np.float32).build()
    opt = Adam(model.named_parameters(), lr=1e-3)
    Xb = X.reshape(B, -1)

    def step():
        _, grads = model._batch_step(Xb, None, 1.0)  # what fit() runs per minibatch
        opt.step(grads)

    return step


def _torch_step(X):
    import torch
    from torch import nn

    class MaskedConv2d(nn.Conv2d):
        def __init__(self, c_in, c_out, k, mask_type):
            super().__init__(c_in, c_out, k, padding=k // 2)
            mask = torch.ones(k, k)
            mask[k // 2, k // 2 + (mask_type == "B"):] = 0
            mask[k // 2 + 1:] = 0
            self.register_buffer("mask", mask)

        def forward(self, x):
            return nn.functional.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(C, C // 2, 1)
            self.b = MaskedConv2d(C // 2, C // 2, 3, "B")
            self.c = nn.Conv2d(C // 2, C, 1)

        def forward(self, h):
            return h + self.c(torch.relu(self.b(torch.relu(self.a(torch.relu(h))))))

    torch.manual_seed(0)
    net = nn.Sequential(MaskedConv2d(1, C, 7, "A"), *[Block() for _ in range(LAYERS)], nn.ReLU(),
                        nn.Conv2d(C, C, 1), nn.ReLU(), nn.Conv2d(C, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.from_numpy(X.astype(np.float32))[:, None]
    inp = 2.0 * x - 1.0

    def step():
        opt.zero_grad()
        logits = net(inp)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / B
        loss.backward()
        opt.step()

    return step


def _setup(quick: bool):
    X = _data()
    return _probgen_step(X), _torch_step(X)


CASES = [
    Case(name="pixelcnn_step", shape=f"28x28 C={C} L={LAYERS} B={B}", dtype="float32", peer="torch Adam",
         setup=_setup, repeats=21, quick_repeats=7),
]
