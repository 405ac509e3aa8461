"""Batched image augmentation on the training device, scaled by one knob, ``aug_strength`` in [0, 1].

Every op acts on a whole batch at once (no per-image Python or PIL work). With strength ``s``:

==================  =====================================================================================
op                  mapping
==================  =====================================================================================
horizontal flip     probability ``min(0.5, s)``, only for datasets where mirroring keeps the label
rotation            angle uniform in ``±30·s`` degrees
scale (zoom)        factor uniform in ``[1 − 0.2·s, 1 + 0.2·s]``
translation         shift uniform in ``±0.125·s`` of the image side per axis (±4 px at 32 px, s = 1)
random erasing      probability ``0.5·s``; a square of side ``0.4·s`` of the image side, filled with the
                    dataset mean (0 after normalisation), placed uniformly (may be clipped at the border)
==================  =====================================================================================

Rotation, scale and translation are one affine warp (``affine_grid`` + ``grid_sample``, bilinear, zero
padding = black), applied to images in [0, 1] before normalisation. ``s = 0`` returns the batch untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    hflip_p: float = 0.0  # probability of a horizontal flip
    rotate_deg: float = 0.0  # max |angle|, degrees
    scale: float = 0.0  # max |zoom - 1|
    translate: float = 0.0  # max |shift|, fraction of the image side
    erase_p: float = 0.0  # probability of erasing a square
    erase_frac: float = 0.0  # square side, fraction of the image side

    @property
    def identity(self) -> bool:
        return self.hflip_p == 0 and not self.warps and self.erase_p == 0

    @property
    def warps(self) -> bool:
        return self.rotate_deg > 0 or self.scale > 0 or self.translate > 0


def aug_params(strength: float, hflip: bool) -> AugmentParams:
    """The documented mapping from ``aug_strength`` to each op's magnitude (see the module docstring)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"aug_strength is {strength}, but must be in [0, 1]")
    s = float(strength)
    return AugmentParams(
        hflip_p=min(0.5, s) if hflip else 0.0,
        rotate_deg=30.0 * s,
        scale=0.2 * s,
        translate=0.125 * s,
        erase_p=0.5 * s,
        erase_frac=0.4 * s,
    )


# Every op takes its magnitudes as a float (one for the batch) or a (B,) tensor (one per image: a trial pack's
# members have their own aug_strength); the random draws are the same either way.
Magnitude = float | torch.Tensor


def _uniform(n: int, bound: Magnitude, like: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, device=like.device, generator=g) * 2 - 1) * bound


def flip(x: torch.Tensor, p: Magnitude, g: torch.Generator | None = None) -> torch.Tensor:
    """Mirrors each image of ``x`` (B, C, H, W) left-right with probability ``p``."""
    mask = torch.rand(x.shape[0], device=x.device, generator=g) < p
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def warp(x: torch.Tensor, a: AugmentParams, g: torch.Generator | None = None) -> torch.Tensor:
    """Random rotation, zoom and translation of ``x`` (B, C, H, W) float, as one bilinear affine warp."""
    return warp_by(x, math.radians(a.rotate_deg), a.scale, a.translate, g)


def warp_by(x: torch.Tensor, rotate_rad: Magnitude, scale: Magnitude, translate: Magnitude,
            g: torch.Generator | None = None) -> torch.Tensor:
    """:func:`warp` with the bounds given directly: max |angle| (radians), max |zoom - 1|, max |shift|."""
    n = x.shape[0]
    angle = _uniform(n, rotate_rad, x, g)
    zoom = 1.0 + _uniform(n, scale, x, g)
    if isinstance(translate, torch.Tensor):
        translate = translate.repeat_interleave(2)  # one bound per (image, axis), in the order of the view below
    shift = _uniform(2 * n, 2 * translate, x, g).view(n, 2)  # normalised coordinates span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output to input coordinates: (B, 2, 3)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def erase(x: torch.Tensor, p: Magnitude, frac: Magnitude, g: torch.Generator | None = None) -> torch.Tensor:
    """Sets a random square of side ``frac`` · side to 0 in each image, with probability ``p``."""
    n, _, h, w = x.shape
    if isinstance(frac, torch.Tensor):  # (B,) → sides (B, 1), rounded half to even like round()
        side_h = (frac * h).round().clamp_min(1).long()[:, None]
        side_w = (frac * w).round().clamp_min(1).long()[:, None]
    else:
        side_h, side_w = max(1, round(frac * h)), max(1, round(frac * w))
    cy = (torch.rand(n, device=x.device, generator=g) * h).long()[:, None]
    cx = (torch.rand(n, device=x.device, generator=g) * w).long()[:, None]
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= cy - side_h // 2) & (ys < cy - side_h // 2 + side_h)  # (B, H)
    in_x = (xs >= cx - side_w // 2) & (xs < cx - side_w // 2 + side_w)  # (B, W)
    hit = torch.rand(n, device=x.device, generator=g) < p
    mask = (in_y[:, :, None] & in_x[:, None, :] & hit[:, None, None])[:, None]  # (B, 1, H, W)
    return x.masked_fill(mask, 0.0)


class Augmenter:
    """Turns a uint8 batch into a normalised, augmented float batch, all on the batch's device."""

    def __init__(self, params: AugmentParams, mean: torch.Tensor, std: torch.Tensor,
                 generator: torch.Generator | None = None):
        self.params = params
        self.g = generator
        # x_norm = x_uint8 * scale + shift, per channel: (1, C, 1, 1)
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)

    def __call__(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        """(B, C, H, W) uint8 → (B, C, H, W) float32, augmented when ``train``."""
        a = self.params
        if not train or a.identity:
            return self.normalise(x)
        x = x.float()
        if a.hflip_p > 0:
            x = flip(x, a.hflip_p, self.g)
        if a.warps:
            x = warp(x.mul_(1.0 / 255.0), a, self.g).mul_(255.0)
        x = torch.addcmul(self.shift, x, self.scale)
        if a.erase_p > 0:
            x = erase(x, a.erase_p, a.erase_frac, self.g)
        return x


class PackAugmenter:
    """The :class:`Augmenter` of a trial pack: one uint8 batch, shared by K members, becomes (K, B, C, H, W)
    normalised floats, each member's copy augmented at its own ``aug_strength`` in one batched pass per op.
    The draws come from one generator for the whole pack, so a member's augmentations are not those of the
    same trial run solo (its eval curve agrees with solo training exactly only at ``aug_strength`` 0)."""

    def __init__(self, strengths: list[float], hflip: bool, mean: torch.Tensor, std: torch.Tensor,
                 generator: torch.Generator | None = None):
        self.solo = Augmenter(AugmentParams(), mean, std, generator)  # normalisation
        self.g = generator
        self.set_strengths(strengths, hflip)

    def set_strengths(self, strengths: list[float], hflip: bool) -> None:
        self.params = [aug_params(s, hflip) for s in strengths]
        device = self.solo.scale.device

        def per_member(field: str, f=lambda v: v) -> torch.Tensor:
            return torch.tensor([f(getattr(a, field)) for a in self.params], device=device)  # (K,)

        self.hflip_p, self.rotate = per_member("hflip_p"), per_member("rotate_deg", math.radians)
        self.scale, self.translate = per_member("scale"), per_member("translate")
        self.erase_p, self.erase_frac = per_member("erase_p"), per_member("erase_frac")

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 → (B, C, H, W) normalised, for every member alike."""
        return self.solo.normalise(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        k, b = len(self.params), x.shape[0]
        if all(a.identity for a in self.params):
            return self.solo.normalise(x).unsqueeze(0).expand(k, *x.shape)
        xs = x.float().repeat(k, 1, 1, 1)  # (K·B, C, H, W), member-major

        def each(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(b)  # (K,) → (K·B,)

        if any(a.hflip_p > 0 for a in self.params):
            xs = flip(xs, each(self.hflip_p), self.g)
        if any(a.warps for a in self.params):
            xs = warp_by(xs.mul_(1.0 / 255.0), each(self.rotate), each(self.scale), each(self.translate),
                         self.g).mul_(255.0)
        xs = torch.addcmul(self.solo.shift, xs, self.solo.scale)
        if any(a.erase_p > 0 for a in self.params):
            xs = erase(xs, each(self.erase_p), each(self.erase_frac), self.g)
        return xs.view(k, b, *x.shape[1:])
