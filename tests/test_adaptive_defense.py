"""The router-aware attacks of scripts/defense_arena.py: chroma removal, the noise levels' subgradient, the penalty."""

from __future__ import annotations

import numpy as np
import pytest

from nips_adv.contract.epsilon import max_perturbation
from nips_adv.defenses.adaptive import LevelEvadingModel, luminance_only, noise_levels, smoothest_pixels
from nips_adv.defenses.noise_level import LUMA, colour_noise_level, luminance_noise_level


def _photo(seed: int = 0, side: int = 24) -> np.ndarray:
    """A smooth colour gradient: both of its noise levels read 0."""
    ramp = np.linspace(40, 200, side)
    image = np.stack([ramp[None, :] + 0 * ramp[:, None], ramp[:, None] + 0 * ramp[None, :], 120 + 0 * ramp[:, None] * ramp[None, :]], axis=2)
    return np.rint(image).astype(np.uint8)


def test_luminance_noise_reads_grey_noise_that_the_colour_level_misses() -> None:
    photo = _photo()
    grey_noise = np.rint(np.random.default_rng(1).normal(0, 8, size=photo.shape[:2]))[..., None]
    grey = np.clip(photo.astype(int) + grey_noise, 0, 255).astype(np.uint8)
    colour, luminance = noise_levels(np.stack([photo, grey])).T
    assert colour[0] == colour[1] == 0  # the same change in R, G and B leaves R-G and B-G as they were
    assert luminance[0] == 0 and luminance[1] > 4
    assert luminance_noise_level(photo[None]) == pytest.approx(luminance[:1])


def test_luminance_only_keeps_the_luminance_change_shared_by_the_channels_inside_eps() -> None:
    clean = np.stack([_photo(), _photo()[::-1]])
    signs = np.random.default_rng(2).choice([-6.0, 6.0], size=clean.shape)
    adversarial = np.clip(clean + signs, 0, 255).astype(np.uint8)
    result = luminance_only(clean, adversarial, 6)
    assert result.dtype == np.uint8 and max_perturbation(result, clean) <= 6
    change = result.astype(int) - clean.astype(int)
    wanted = np.rint((adversarial.astype(float) - clean) @ LUMA)
    np.testing.assert_array_equal(change[..., 0], wanted)  # no clipping on these values: every channel moves by it
    np.testing.assert_array_equal(change[..., 0], change[..., 2])
    assert colour_noise_level(adversarial).min() > 0 and colour_noise_level(result).max() == 0


def _half_flat_half_noisy(seed: int = 3) -> np.ndarray:
    """24 x 24: the left half flat grey, the right half noisy in colour."""
    image = np.full((24, 24, 3), 128.0)
    image[:, 12:] += np.random.default_rng(seed).normal(0, 20, size=(24, 12, 3))
    return np.clip(np.rint(image), 0, 255)


def test_the_smoothest_pixels_are_where_the_level_is_read_and_their_filter_neighbours() -> None:
    image = _half_flat_half_noisy()[None]
    mask = smoothest_pixels(image, 0.3)[0]
    assert mask[:, :11].all() and not mask[:, 14:].any()  # the flat half, and one pixel into the noisy half at most
    with pytest.raises(ValueError, match="sides of at least 3"):
        smoothest_pixels(image[:, :2], 0.3)


class _Constant:
    """A model whose loss gradient is ones everywhere."""

    input_side = 24

    def gradient_function(self, loss, transform=None, *, backward=None):
        return lambda pixels, labels, weights=None: np.ones(np.shape(pixels), np.float32)


def test_the_evading_gradient_is_zero_where_the_level_is_read_and_the_steps_keep_it() -> None:
    image = _half_flat_half_noisy()[None]
    model = LevelEvadingModel(_Constant(), untouched=0.3)
    assert model.input_side == 24
    gradient = model.gradient_function(None)(image, np.array([1]))
    mask = smoothest_pixels(image, 0.3)
    assert (gradient[mask] == 0).all() and (gradient[~mask] == 1).all()
    stepped = image + 8 * np.sign(gradient) * np.random.default_rng(0).choice([-1, 1], size=image.shape)
    np.testing.assert_array_equal(noise_levels(stepped), noise_levels(image))  # the flat half still holds the level: 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        LevelEvadingModel(_Constant(), untouched=1.5)
