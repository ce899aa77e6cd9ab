"""A features-extractor wrapper that does not run the extractor on sb3-contrib's padding.

sb3-contrib pads every training sequence to the longest one in the minibatch with all-zero observations, and
runs the features extractor on the padded batch. On Atari (short episodes early in training, sequences cut at
episode starts) a 256-step minibatch is padded to about 530 rows on average, so the NatureCNN's forward and
backward do twice the useful work. Padded rows only feed the core *after* each sequence's real steps and are
masked out of the loss, so their features never matter.

:class:`SkipPaddingExtractor` runs the wrapped extractor on the rows that are not all zero, and once on a single
zero row whose features it copies to every all-zero row (real all-zero observations included, which get exactly
the features they would have got). It changes no value the loss depends on; it only skips repeated work.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN

__all__ = ["SkipPaddingExtractor"]


class SkipPaddingExtractor(BaseFeaturesExtractor):
    """
    Wrap a features extractor so that all-zero rows (padding) are computed once per batch.

    :param observation_space: observation space
    :param extractor_class: the wrapped extractor (default NatureCNN)
    :param extractor_kwargs: its keyword arguments
    """

    def __init__(
        self,
        observation_space: gym.Space,
        extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        extractor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        inner = extractor_class(observation_space, **(extractor_kwargs or {}))
        super().__init__(observation_space, inner.features_dim)
        self.inner = inner

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """
        :param observations: (batch, *obs_shape), already preprocessed
        :return: (batch, features_dim), equal to ``inner(observations)``
        """
        nonzero = observations.flatten(1).any(1)
        n_zero = observations.shape[0] - int(nonzero.sum())
        if n_zero <= 1:
            return self.inner(observations)
        idx = th.nonzero(nonzero).flatten()
        zero_features = self.inner(observations[:1].new_zeros((1, *observations.shape[1:])))
        out = zero_features.expand(observations.shape[0], -1)
        if idx.numel() == 0:
            return out.contiguous()
        return out.index_copy(0, idx, self.inner(observations[idx]))
