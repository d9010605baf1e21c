"""Importance sampling of training images (layerlab.train.sampling): the draw and its weights.

The training step it feeds is checked against Keras' fit with sample weights in
tests/test_torch_train.py; here, the sampler alone: probabilities that add up to the asked
share, a floor and a ceiling, every image drawn while unseen, and weights that make the
weighted sum over a draw an unbiased estimate of the sum over all images.
"""

from __future__ import annotations

import numpy as np
import pytest

from layerlab.errors import SpecError
from layerlab.train.recipes import FAST, run_steps
from layerlab.train.sampling import ImportanceSampler


def _scored(n: int, fraction: float, floor: float, seed: int = 0) -> ImportanceSampler:
    sampler = ImportanceSampler(n, fraction, floor)
    rng = np.random.default_rng(seed)
    sampler.update(np.arange(n), rng.lognormal(-3.0, 1.5, n).astype(np.float32))  # like output errors: mostly tiny
    return sampler


def test_unseen_images_are_always_drawn():
    sampler = ImportanceSampler(1000, 0.3, 0.05)
    keep, weights = sampler.draw(np.arange(1000), np.random.default_rng(1))
    assert keep.all() and np.all(weights == 1.0)
    sampler.update(np.arange(500), np.full(500, 0.1, np.float32))
    p = sampler.probabilities()
    assert np.all(p[500:] == 1.0)  # still unseen
    assert np.all(p[:500] == 0.05)  # the 500 unseen already exceed 30% of 1000: the seen ones get the floor


@pytest.mark.parametrize("fraction, floor", [(0.4, 0.05), (0.2, 0.2), (0.7, 0.01)])
def test_probabilities_add_up_to_the_share_within_floor_and_one(fraction, floor):
    sampler = _scored(20000, fraction, floor)
    p = sampler.probabilities()
    assert p.sum() == pytest.approx(fraction * 20000, rel=1e-6)
    assert p.min() >= floor - 1e-12 and p.max() <= 1.0
    order = np.argsort(sampler.scores)
    assert np.all(np.diff(p[order]) >= -1e-12)  # a larger error is never drawn less often
    if floor < fraction:
        assert (p == 1.0).any() and (p == floor).any()  # these scores span both clips


def test_a_draw_has_about_the_share_and_its_weights_are_one_over_p():
    sampler = _scored(20000, 0.4, 0.05)
    ids = np.random.default_rng(2).permutation(20000)
    keep, weights = sampler.draw(ids, np.random.default_rng(3))
    p = sampler.probabilities()[ids]
    expected, sd = p.sum(), np.sqrt((p * (1 - p)).sum())
    assert abs(keep.sum() - expected) < 5 * sd
    np.testing.assert_allclose(weights, 1.0 / p[keep], rtol=1e-6)


def test_weighted_sums_over_draws_are_unbiased():
    """E[sum over kept of w_i v_i] = sum over all of v_i, for any per-image values v."""
    n = 5000
    sampler = _scored(n, 0.3, 0.05)
    values = np.random.default_rng(4).normal(1.0, 2.0, n) + 5 * sampler.scores  # correlated with the scores, as losses are
    rng = np.random.default_rng(5)
    estimates = []
    for _ in range(400):
        keep, weights = sampler.draw(np.arange(n), rng)
        estimates.append(float((weights * values[keep]).sum()))
    estimates = np.asarray(estimates)
    standard_error = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean() - values.sum()) < 4 * standard_error


def test_recipe_validates_sampling_and_counts_its_steps():
    with pytest.raises(SpecError, match=r"sample_fraction=1\.5, expected None \(every image\) or 0 < value < 1"):
        FAST.replace(sample_fraction=1.5)
    with pytest.raises(SpecError, match=r"sample_floor=0\.5, expected 0 < floor <= sample_fraction \(0\.4\)\. Fix: "):
        FAST.replace(sample_fraction=0.4, sample_floor=0.5)
    with pytest.raises(SpecError, match=r"sample_floor=0\.0, expected 0 < floor <= 1 \(1\.0\)\. Fix: sample_floor=0\.05"):
        FAST.replace(sample_fraction=None, sample_floor=0.0)
    full = FAST.replace(sample_fraction=None, batch_size=256)
    assert run_steps(full, 60000, 10) == 10 * 235
    # The first epoch sees every image, the others 40% of them: 24000 images, 94 steps of 256.
    assert run_steps(full.replace(sample_fraction=0.4), 60000, 10) == 235 + 9 * 94
    assert [run_steps(full.replace(sample_fraction=0.4), 60000, e) for e in (0, 1, 2)] == [0, 235, 329]  # where epochs start


def test_an_epoch_of_another_training_set_is_one_clear_error():
    sampler = _scored(100, 0.4, 0.05)
    with pytest.raises(ValueError, match="this epoch has 90 training images, the sampler scored 100. Fix: "):
        sampler.epoch(90, None, np.random.default_rng(0))
    ids, weights, share = sampler.epoch(100, np.arange(100)[::-1], np.random.default_rng(0))
    assert len(ids) == len(weights) and share == len(ids) / 100
    assert np.all(np.diff(ids) < 0)  # the given order is kept
