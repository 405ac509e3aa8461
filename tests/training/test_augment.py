"""Batched augmentation: strength 0 is the identity; each op acts; shape and dtype are kept."""

from __future__ import annotations

import pytest
import torch

from hpsearch.training.augment import Augmenter, AugmentParams, aug_params, erase, flip, warp


def batch(n=16, c=1, size=28):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def augmenter(params, c=1):
    return Augmenter(params, torch.full((c,), 0.5), torch.full((c,), 0.25), torch.Generator().manual_seed(1))


def test_strength_zero_is_identity():
    x = batch()
    aug = augmenter(aug_params(0.0, hflip=True))
    assert aug.params.identity
    assert torch.equal(aug(x), aug(x, train=False)), "strength 0 only normalises"
    assert torch.allclose(aug(x), (x.float() / 255 - 0.5) / 0.25, atol=1e-5)


@pytest.mark.parametrize("c", [1, 3])
def test_strength_one_changes_images_keeps_shape_and_dtype(c):
    x = batch(c=c)
    aug = augmenter(aug_params(1.0, hflip=True), c)
    out = aug(x)
    plain = aug(x, train=False)
    assert out.shape == x.shape and out.dtype == torch.float32
    changed = (out - plain).flatten(1).abs().amax(1) > 1e-3
    assert changed.float().mean() > 0.9, "nearly every image is changed at full strength"


def test_mapping_scales_with_strength():
    half, full = aug_params(0.5, hflip=True), aug_params(1.0, hflip=True)
    assert full.rotate_deg == 2 * half.rotate_deg == 30
    assert full.translate == 0.125 and full.scale == 0.2 and full.erase_p == 0.5
    assert aug_params(1.0, hflip=False).hflip_p == 0.0, "no flips for datasets where mirroring changes the label"
    with pytest.raises(ValueError):
        aug_params(1.5, hflip=True)


def test_flip_mirrors_some_images():
    x = batch().float()
    out = flip(x, 0.5, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert any(mirrored) and any(same) and all(m or s for m, s in zip(mirrored, same, strict=True))


def _square(size=28):
    x = torch.zeros(1, 1, size, size)
    x[..., 10:18, 10:18] = 1.0
    return x


def test_translation_moves_the_content():
    x = _square().repeat(8, 1, 1, 1)
    out = warp(x, AugmentParams(translate=0.125), torch.Generator().manual_seed(0))
    ys = torch.arange(28.0).view(1, 1, 28, 1)
    centre_y = (out * ys).sum((1, 2, 3)) / out.sum((1, 2, 3))
    assert (centre_y - 13.5).abs().max() > 0.5, "centres of mass moved"
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.05), "a shift keeps the mass"


def test_rotation_keeps_the_centre_but_changes_pixels():
    x = torch.zeros(16, 1, 28, 28)
    x[..., 12:16, 4:24] = 1.0  # a horizontal bar through the centre
    out = warp(x, AugmentParams(rotate_deg=60), torch.Generator().manual_seed(0))
    turned = (out - x).abs().sum((1, 2, 3)) > 5
    assert turned.sum() >= 12, "most bars were turned (angles are uniform in ±60°)"
    assert out[..., 13:15, 13:15].min() > 0.5, "the centre stays covered"


def test_scale_changes_the_area():
    x = _square().repeat(16, 1, 1, 1)
    out = warp(x, AugmentParams(scale=0.3), torch.Generator().manual_seed(0))
    area = out.sum((1, 2, 3))
    assert area.max() > 64 * 1.1 and area.min() < 64 * 0.9, "zooming in grows, zooming out shrinks the square"


def test_erasing_zeroes_a_square():
    x = torch.ones(32, 1, 28, 28)
    out = erase(x, p=1.0, frac=0.4, g=torch.Generator().manual_seed(0))
    zeroed = (out == 0).sum((1, 2, 3))
    assert (zeroed > 0).all(), "with p=1 every image is erased"
    assert zeroed.max() <= round(0.4 * 28) ** 2
    assert erase(x, p=0.0, frac=0.4).eq(1).all()


def test_reproducible_for_a_seed():
    x = batch()
    a = augmenter(aug_params(0.7, True))(x)
    b = augmenter(aug_params(0.7, True))(x)
    assert torch.equal(a, b)
