"""Importance sampling of training images: each epoch trains mostly on the images that still teach.

Late in training a 650-parameter network gets most MNIST images right with confidence: measured
on a trained seed650 (benchmarks/TRAINING_LOG.md section 4), the half of the training images
with the largest error carry 91% of the summed gradient size and the top tenth 54%. A uniform
epoch spends most of its time on images whose gradients are almost zero.

So, with ``Recipe.sample_fraction = f``, every epoch after the first trains on a random subset
of about ``f * N`` images: image ``i`` is drawn with probability
``p_i = clip(score_i / tau, floor, 1)``, where ``score_i`` is the size of the loss gradient at the
network's output (``|softmax - target|``, cheap, the usual stand-in for the gradient size) the
last time the image was seen and ``tau`` makes the ``p_i`` add up to ``f * N``. Its loss is
weighted by ``1 / p_i``, so the expected gradient of an epoch is the gradient over all
images: the recipe optimises the same objective, not a re-weighted one. The floor keeps every
image in play (drawn at least once in ``1 / floor`` epochs on average) and bounds the weights.
Images never seen yet (the first epoch) are always drawn.

This is importance sampling with the output gradient norm as the importance (Katharopoulos and
Fleuret, "Not All Samples Are Created Equal", ICML 2018; Loshchilov and Hutter, "Online Batch
Selection", 2015).
"""

from __future__ import annotations

import numpy as np


class ImportanceSampler:
    """Per-image scores and the draw of each epoch's subset.

    Args:
        num_images: training images N (scores are indexed by the image's position in the
            training set, not in an epoch's shuffled order).
        fraction: expected share of images per epoch, 0 < fraction < 1.
        floor: smallest drawing probability, 0 < floor <= fraction.
    """

    def __init__(self, num_images: int, fraction: float, floor: float):
        self.fraction, self.floor = float(fraction), float(floor)
        self.scores = np.full(num_images, np.inf, np.float32)  # inf: not seen yet, always drawn

    def probabilities(self) -> np.ndarray:
        """Drawing probability of every image, (N,) float64, summing to about ``fraction * N``."""
        scores = self.scores.astype(np.float64)
        unseen = ~np.isfinite(scores)
        target = self.fraction * len(scores)
        seen = scores[~unseen]
        p = np.ones(len(scores))
        if not len(seen) or unseen.sum() + self.floor * len(seen) >= target:
            p[~unseen] = self.floor
            return p
        budget = target - unseen.sum()  # what the seen images may add up to

        def total(tau: float) -> float:
            return float(np.clip(seen / tau, self.floor, 1.0).sum())

        # total(tau) falls as tau grows; bisect on log(tau) between "all at 1" and "all at the floor"
        # (1e-30 keeps the logarithm finite for zero scores; 60 halvings of the log-interval reach
        # float64 precision).
        low, high = max(float(seen.min()), 1e-30), max(float(seen.max()), 1e-30) / self.floor
        for _ in range(60):
            middle = (low * high) ** 0.5
            if total(middle) > budget:
                low = middle
            else:
                high = middle
        p[~unseen] = np.clip(seen / high, self.floor, 1.0)
        return p

    def draw(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Which of ``ids`` (an epoch's order) to train on, and their loss weights ``1 / p``.

        Returns:
            (keep: bool mask over ``ids``, weights: float32 for the kept ones, in order).
        """
        p = self.probabilities()[ids]
        keep = rng.random(len(ids)) < p
        return keep, (1.0 / p[keep]).astype(np.float32)

    def epoch(self, num_images: int, order: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """An epoch's images: (ids to train on, in ``order``'s order; their loss weights; the kept share).

        Raises:
            ValueError: ``num_images`` is not the number of images scored.
        """
        if num_images != len(self.scores):
            raise ValueError(
                f"importance sampling: this epoch has {num_images} training images, the sampler scored "
                f"{len(self.scores)}. Fix: train every epoch of a run (and its resume) on the same training set."
            )
        ids = np.arange(num_images) if order is None else np.asarray(order)
        keep, weights = self.draw(ids, rng)
        return ids[keep], weights, float(keep.mean())

    def update(self, ids: np.ndarray, scores: np.ndarray) -> None:
        """Record the output-gradient sizes of the images just trained on.

        Args:
            ids: (B,) positions in the training set.
            scores: (B,) float, |softmax - target| of each.
        """
        self.scores[ids] = scores
