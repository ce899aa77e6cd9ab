"""Feature extractors: SB3's NatureCNN for Atari (reused as is), small CNNs for MiniGrid's symbolic view and MinAtar."""

from __future__ import annotations

import gymnasium as gym
import torch as th
import torch.nn.functional as F
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

__all__ = ["MinAtarCNN", "MiniGridCNN", "NatureCNN"]


class MiniGridCNN(BaseFeaturesExtractor):
    """
    CNN for small symbolic grids (MiniGrid's egocentric 7x7 view and extra constant planes).

    Each channel holds integer codes (object, colour, state, target...); every channel is one-hot encoded with
    ``int(high.max()) + 1`` values, then three 2x2 convolutions (with one 2x2 max-pool) and a linear layer.

    :param observation_space: Box of shape (height, width, channels), channel-last, integer codes in [0, high]
    :param features_dim: size of the output features
    :param channels: output channels of the three convolutions
    :param cell_channels: if > 0, a per-cell (1x1) layer of this width first, so that codes of the same cell
        (e.g. an object's kind and colour and the target planes) combine before the spatial convolutions
    """

    def __init__(
        self,
        observation_space: gym.Space,
        features_dim: int = 128,
        channels: tuple[int, int, int] = (16, 32, 64),
        cell_channels: int = 0,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(f"MiniGridCNN needs a Box observation shaped (height, width, channels), got {observation_space}")
        n_values = int(observation_space.high.max()) + 1
        if n_values > 32:
            raise ValueError(
                f"MiniGridCNN one-hot encodes integer codes and allows high <= 31, got high={n_values - 1}; "
                "wrap the env so that the observation space states the real largest code"
            )
        super().__init__(observation_space, features_dim)
        height, width, n_channels = observation_space.shape
        self.n_values = n_values
        if len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be three positive integers, got {channels!r}")
        c1, c2, c3 = (int(c) for c in channels)
        n_in = n_channels * n_values
        cell: list[nn.Module] = [nn.Conv2d(n_in, cell_channels, 1), nn.ReLU()] if cell_channels > 0 else []
        self.cnn = nn.Sequential(
            *cell,
            nn.Conv2d(cell_channels if cell else n_in, c1, 2),
            nn.ReLU(),
            nn.MaxPool2d(2) if min(height, width) >= 5 else nn.Identity(),
            nn.Conv2d(c1, c2, 2),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            n_flat = self.cnn(self._one_hot(th.zeros(1, *observation_space.shape))).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())

    def _one_hot(self, obs: th.Tensor) -> th.Tensor:
        """(B, H, W, C) codes -> (B, C * n_values, H, W) one-hot planes."""
        codes = obs.long().clamp_(0, self.n_values - 1)
        one_hot = F.one_hot(codes, self.n_values).flatten(3).to(th.float32)
        return one_hot.permute(0, 3, 1, 2)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """
        :param observations: (batch, height, width, channels)
        :return: (batch, features_dim)
        """
        return self.linear(self.cnn(self._one_hot(observations)))


class MinAtarCNN(BaseFeaturesExtractor):
    """
    CNN for MinAtar's 10x10 binary object planes, after the MinAtar paper's baseline network (Young & Tian 2019):
    one 3x3 convolution (stride 1, no padding, 16 channels), ReLU, then a linear layer and ReLU.

    :param observation_space: Box of shape (channels, height, width), channel-first, values in {0, 1}
        (``rims_rl.envs.minatar.MinAtarEnv``)
    :param features_dim: size of the output features
    :param channels: output channels of the convolution
    """

    def __init__(self, observation_space: gym.Space, features_dim: int = 128, channels: int = 16) -> None:
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(f"MinAtarCNN needs a Box observation shaped (channels, height, width), got {observation_space}")
        n_channels, height, width = observation_space.shape
        if min(height, width) < 3:
            raise ValueError(f"MinAtarCNN needs channel-first planes of at least 3x3, got shape {observation_space.shape}")
        super().__init__(observation_space, features_dim)
        self.cnn = nn.Sequential(nn.Conv2d(n_channels, int(channels), 3), nn.ReLU(), nn.Flatten())
        n_flat = int(channels) * (height - 2) * (width - 2)
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """
        :param observations: (batch, channels, height, width)
        :return: (batch, features_dim)
        """
        return self.linear(self.cnn(observations.float()))
