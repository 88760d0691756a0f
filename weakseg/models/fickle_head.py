"""FickleNet's classification layer (dissertation 3.2.1, Fig. 3.2): a bias-free k x k convolution whose
hidden units are selected at random per sliding-window position.

The selection is implemented with the feature-map expansion trick: the feature map [N,D,h,w] is expanded to
[N,D,h*k,w*k] so that the k x k window of every output location occupies its own non-overlapping k x k block,
dropout is applied to the expanded map, and a convolution with stride k gives the class maps [N,C,h,w].
The centre of every window is never dropped (FickleNet's centre-fixed dropout), so each window keeps the unit
it is centred on; the other units are kept with probability 1 - drop and scaled by 1 / (1 - drop), so the
expected output is the plain k x k convolution.

A hidden unit is a position of the window (mask "spatial", the default): one draw per window and offset, shared
by all channels, so every window sees a random spatial pattern of its k x k positions - the kernel shapes of
Fig. 3.1(b), which include dilated-convolution shapes. Mask "element" draws per channel as well (plain dropout
on the expanded map); it costs D times more random numbers per sample.

Training mode samples a selection at every forward (torch's global RNG, which the training engine seeds);
eval mode is deterministic and returns the expectation (a same-padded k x k convolution). Attribution code
samples explicitly with `sample_mask` + `selected_maps`, which never depend on the module's mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def expand_windows(feats: torch.Tensor, kernel: int) -> torch.Tensor:
    """Expand [N,D,h,w] to [N,D,h*k,w*k]: block (i,j) holds the zero-padded k x k window centred at (i,j)."""
    n, d, h, w = feats.shape
    cols = F.unfold(feats, kernel, padding=kernel // 2)  # [N, D*k*k, h*w]
    cols = cols.view(n, d, kernel, kernel, h, w)
    return cols.permute(0, 1, 4, 2, 5, 3).reshape(n, d, h * kernel, w * kernel)


def centre_mask(h: int, w: int, kernel: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool [h*k, w*k]: True at the centre unit of every expanded window."""
    centre = torch.zeros(kernel, kernel, dtype=torch.bool, device=device)
    centre[kernel // 2, kernel // 2] = True
    return centre.repeat(h, w)


class FickleHead(nn.Module):
    """k x k bias-free classification layer with stochastic hidden-unit selection (FickleNet)."""

    def __init__(self, in_channels: int, num_classes: int, kernel: int = 3, drop: float = 0.9) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"fickle kernel must be odd and >= 1, got {kernel}")
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"fickle dropout rate must be in [0, 1), got {drop}")
        self.kernel, self.drop = kernel, drop
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default initialisation

    def expected_maps(self, feats: torch.Tensor) -> torch.Tensor:
        """The deterministic class maps (all units selected): a same-padded k x k convolution, [N,C,h,w]."""
        return F.conv2d(feats, self.weight, padding=self.kernel // 2)

    def sample_mask(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        mode: str = "spatial",
    ) -> torch.Tensor:
        """A keep mask for an expanded map of shape [N,D,h*k,w*k]: float {0, 1/(1-drop)}, centres always 1.

        mode "spatial" returns [N,1,h*k,w*k] (one draw per window position, broadcast over channels); "element"
        returns [N,D,h*k,w*k].
        """
        n, d, hk, wk = shape
        if mode not in ("spatial", "element"):
            raise ValueError(f"mask mode must be spatial or element, got {mode!r}")
        draw = (n, 1, hk, wk) if mode == "spatial" else (n, d, hk, wk)
        keep = torch.rand(draw, generator=generator, device=device) >= self.drop
        scaled = keep.to(torch.float32) / (1.0 - self.drop)
        centre = centre_mask(hk // self.kernel, wk // self.kernel, self.kernel, device)
        return torch.where(centre, torch.ones((), device=device), scaled)

    def selected_maps(self, expanded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class maps [N,C,h,w] of an expanded map [N,D,h*k,w*k] under a keep mask (broadcastable to it)."""
        return F.conv2d(expanded * mask, self.weight, stride=self.kernel)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Class maps [N,C,h,w]: one random selection per window in training mode, the expectation in eval mode."""
        if not self.training or self.drop == 0.0:
            return self.expected_maps(feats)
        expanded = expand_windows(feats, self.kernel)
        mask = self.sample_mask(tuple(expanded.shape), device=feats.device).to(feats.dtype)
        return self.selected_maps(expanded, mask)
