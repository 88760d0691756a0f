"""IRN's training loss on affinity-label pairs (the authors' `AffinityDisplacementLoss` and `step/train_irn.py`).

With B the boundary map (sigmoid of the boundary logits) and a_d(p) = 1 - max B on IRN's path from p to p + o_d
(`path_affinity`), over the pairs of a batch:
  pos_aff = bg_pos_aff / 2 + fg_pos_aff / 2, each sum(label * -log(a + 1e-5)) / (sum(label) + 1e-5);
  neg_aff = sum(neg * -log(1 + 1e-5 - a)) / (sum(neg) + 1e-5);
  dp_fg = sum(fg_pos * |D(p) - D(p + o) - o|) / (2 sum(fg_pos) + 1e-5)   (same instance: D points at one centre);
  dp_bg = sum(bg_pos * |D(p) - D(p + o)|) / (2 sum(bg_pos) + 1e-5);
  total = (pos_aff + neg_aff) / 2 + (dp_fg + dp_bg) / 2.
D is the displacement field (dy, dx) in stride-4 cells; the |.| sums over its two channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakseg.refine.random_walk import neighbour_offsets, path_affinity

EPS = 1e-5


def batched_path_affinity(edge: torch.Tensor, radius: int) -> torch.Tensor:
    """path_affinity of each map of a batch [N,h,w] -> [N,D,h,w], in one call.

    The maps are stacked vertically with radius - 1 rows of 1.0 between them: a path never spans more rows
    than that, so a pair that would leave one map meets a 1.0 (affinity 0, as outside the image) and every
    value equals the map's own path_affinity."""
    n, h, w = edge.shape
    rf = radius - 1
    if n == 1:
        return path_affinity(edge[0], radius)[None]
    sep = edge.new_ones((rf, w))
    parts: list[torch.Tensor] = []
    for i in range(n):
        parts += [edge[i], sep] if i < n - 1 else [edge[i]]
    tall = path_affinity(torch.cat(parts, dim=0), radius)
    return torch.stack([tall[:, i * (h + rf) : i * (h + rf) + h] for i in range(n)])


def pair_displacement(disp: torch.Tensor, radius: int) -> torch.Tensor:
    """D(p) - D(p + o_d) for a displacement field [N,2,h,w] -> [N,2,D,h,w] (0 taken beyond the map's edge)."""
    n, c, h, w = disp.shape
    rf = radius - 1
    padded = torch.nn.functional.pad(disp, (rf, rf, 0, rf))
    dst = [padded[:, :, dy : dy + h, rf + dx : rf + dx + w] for dy, dx in neighbour_offsets(radius)]
    return disp.unsqueeze(2) - torch.stack(dst, dim=2)


@dataclass
class IRNLoss:
    """The total loss and its four terms (scalar tensors)."""

    total: torch.Tensor
    pos_aff: torch.Tensor
    neg_aff: torch.Tensor
    dp_fg: torch.Tensor
    dp_bg: torch.Tensor

    def terms(self) -> dict[str, float]:
        """The terms as floats (for progress records)."""
        return {k: float(getattr(self, k).detach()) for k in ("pos_aff", "neg_aff", "dp_fg", "dp_bg")}


def irn_loss(
    edge_logits: torch.Tensor,
    disp: torch.Tensor,
    bg_pos: torch.Tensor,
    fg_pos: torch.Tensor,
    neg: torch.Tensor,
    radius: int = 10,
) -> IRNLoss:
    """IRN's loss for boundary logits [N,1,h,w], displacement [N,2,h,w] and pair labels [N,D,h,w] (module doc)."""
    if edge_logits.shape[1] != 1 or disp.shape[1] != 2:
        raise ValueError(f"expected edge [N,1,h,w] and disp [N,2,h,w], got {edge_logits.shape} and {disp.shape}")
    offsets = neighbour_offsets(radius)
    want = (edge_logits.shape[0], len(offsets), *edge_logits.shape[2:])
    for name, t in (("bg_pos", bg_pos), ("fg_pos", fg_pos), ("neg", neg)):
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must be [N,D,h,w] = {list(want)} for radius {radius}, got {list(t.shape)}")
    aff = batched_path_affinity(torch.sigmoid(edge_logits[:, 0]), radius)
    pos_term = -torch.log(aff + EPS)
    neg_term = -torch.log(1.0 + EPS - aff)
    bg_pos_aff = (bg_pos * pos_term).sum() / (bg_pos.sum() + EPS)
    fg_pos_aff = (fg_pos * pos_term).sum() / (fg_pos.sum() + EPS)
    pos_aff = bg_pos_aff / 2 + fg_pos_aff / 2
    neg_aff = (neg * neg_term).sum() / (neg.sum() + EPS)
    pair = pair_displacement(disp, radius)
    target = torch.tensor(offsets, dtype=disp.dtype, device=disp.device).t().reshape(1, 2, len(offsets), 1, 1)
    dp_fg = ((pair - target).abs() * fg_pos.unsqueeze(1)).sum() / (2 * fg_pos.sum() + EPS)
    dp_bg = (pair.abs() * bg_pos.unsqueeze(1)).sum() / (2 * bg_pos.sum() + EPS)
    total = (pos_aff + neg_aff) / 2 + (dp_fg + dp_bg) / 2
    return IRNLoss(total, pos_aff, neg_aff, dp_fg, dp_bg)
