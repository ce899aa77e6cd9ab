"""SB3 glue: sb3-contrib's RecurrentActorCriticPolicy with a pluggable recurrent core (RIMs, LSTM or GRU).

Only the core differs between ``core="rims"`` and ``core="lstm"``: the feature extractor, heads, trainer
(``sb3_contrib.RecurrentPPO``) and rollout buffer are sb3-contrib's own.
"""

from __future__ import annotations

from typing import Any, cast

import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from rims_rl.nn import make_core

__all__ = ["CnnRimsPolicy", "MlpRimsPolicy", "MultiInputRimsPolicy", "RimsRecurrentPolicy"]

_LSTM_ONLY_KWARGS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "lstm_kwargs")


class RimsRecurrentPolicy(RecurrentActorCriticPolicy):
    """
    Recurrent actor-critic policy whose recurrent core is RIMs, an LSTM or a GRU.

    The core keeps sb3-contrib's state layout: (h, c), each (1, n_envs, hidden_size), and is reached as
    ``self.lstm_actor`` (and ``self.lstm_critic`` with a separate critic core) as in sb3-contrib.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param core: ``"rims"``, ``"lstm"`` or ``"gru"``
    :param core_kwargs: constructor arguments of the core (see :class:`rims_rl.RIMs`; ``hidden_size`` for lstm/gru)
    :param shared_core: one core shared by actor and critic and trained by both losses (the paper's setup);
        if False, the critic gets its own core (``enable_critic_lstm=True``) or a feedforward layer
    :param enable_critic_lstm: with ``shared_core=False``, give the critic a separate core
    :param skip_padding: run the feature extractor once for all all-zero observation rows of a batch. sb3-contrib
        pads training sequences with all-zero observations (about half the rows of an Atari minibatch), so this
        halves the extractor's work there; every row still gets exactly the features it would have got
    :param kwargs: the other arguments of ``RecurrentActorCriticPolicy`` / ``ActorCriticPolicy``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        core: str = "rims",
        core_kwargs: dict[str, Any] | None = None,
        shared_core: bool = True,
        enable_critic_lstm: bool = False,
        skip_padding: bool = True,
        **kwargs: Any,
    ) -> None:
        given = [k for k in _LSTM_ONLY_KWARGS if k in kwargs]
        if given:
            raise ValueError(
                f"{given} are sb3-contrib LSTM options; configure the core with core='rims'|'lstm'|'gru' and core_kwargs"
            )
        if shared_core and enable_critic_lstm:
            raise ValueError("enable_critic_lstm=True needs shared_core=False (a separate critic core)")
        if shared_core and not kwargs.get("share_features_extractor", True):
            raise ValueError("share_features_extractor=False needs shared_core=False (a shared core needs shared features)")
        self.core_name = core
        self.core_kwargs = dict(core_kwargs or {})
        self.shared_core = shared_core
        self.skip_padding = skip_padding
        # Validate the core options and learn its state size before the heads are built.
        hidden_size: int = make_core(core, 1, **self.core_kwargs).hidden_size  # type: ignore[assignment]
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            lstm_hidden_size=hidden_size,
            n_lstm_layers=1,
            shared_lstm=shared_core,
            enable_critic_lstm=enable_critic_lstm,
            **kwargs,
        )
        # Replace sb3-contrib's nn.LSTM modules by the chosen core(s), then rebuild the optimizer over them.
        self.lstm_actor = make_core(core, self.features_dim, **self.core_kwargs)  # type: ignore[assignment]
        if self.lstm_critic is not None:
            self.lstm_critic = make_core(core, self.features_dim, **self.core_kwargs)  # type: ignore[assignment]
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            core=self.core_name,
            core_kwargs=self.core_kwargs,
            shared_core=self.shared_core,
            enable_critic_lstm=self.enable_critic_lstm,
            skip_padding=self.skip_padding,
        )
        return data

    def save(self, path: str) -> None:
        """
        Save the policy alone (constructor arguments + weights) in rims_rl's safe format (:mod:`rims_rl.safe_io`:
        JSON + safetensors; SB3's ``BasePolicy.save`` pickles).

        :param path: the file
        """
        from rims_rl.checkpoint import atomic_write
        from rims_rl.safe_io import values_bytes

        data = {k: v for k, v in self._get_constructor_parameters().items() if k != "lr_schedule"}
        payload = values_bytes("policy", {"data": data, "state_dict": self.state_dict()})
        with atomic_write(path) as file:
            file.write(payload)

    @classmethod
    def load(cls, path: str, device: th.device | str = "auto") -> Any:  # type: ignore[override]
        """
        Load a policy written by :meth:`save` (nothing is unpickled).

        :param path: the file
        :param device: torch device
        :return: the policy
        :raises rims_rl.safe_io.UnsafeCheckpointError: not a safe-format policy file (e.g. a pickled ``.pth``)
        """
        from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, get_device

        from rims_rl.safe_io import read_values

        values = read_values(path, "policy")
        model = cls(lr_schedule=FloatSchedule(ConstantSchedule(0.0)), **values["data"])
        model.load_state_dict(values["state_dict"])
        model.to(get_device(device))
        return model

    def extract_features(  # type: ignore[override]
        self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor | None = None
    ) -> th.Tensor | tuple[th.Tensor, th.Tensor]:
        """
        As SB3's, but with ``skip_padding`` the extractor sees each batch's all-zero rows only once.

        :param obs: observations (batch, ...)
        :param features_extractor: as SB3's
        :return: features (batch, features_dim), or (actor, critic) features without a shared extractor
        """
        if not (self.skip_padding and isinstance(obs, th.Tensor) and obs.shape[0] > 2):
            return super().extract_features(obs, features_extractor)
        zero = obs.flatten(1).eq(0).all(1)  # bool whatever the dtype (any() on uint8 returns uint8)
        if int(zero.sum()) < 2:
            return super().extract_features(obs, features_extractor)
        first_zero = int(th.nonzero(zero)[0])
        keep = ~zero
        keep[first_zero] = True
        position = th.cumsum(keep, 0) - 1  # row -> its row among the kept ones
        index = th.where(keep, position, position[first_zero])
        features = super().extract_features(obs[keep], features_extractor)
        if isinstance(features, tuple):
            return features[0][index], features[1][index]
        return features[index]

    @staticmethod
    def _process_sequence(  # type: ignore[override]
        features: th.Tensor,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        lstm: nn.Module,
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """
        Run the core over padded sequences in one call; episode starts reset the state inside the core.

        :param features: (n_seq * seq_len, features_dim), sequence-major as the rollout buffer lays it out
        :param lstm_states: (h, c), each (1, n_seq, hidden_size)
        :param episode_starts: (n_seq * seq_len,)
        :param lstm: the core
        :return: core output (n_seq * seq_len, hidden_size) and the final (h, c)
        """
        n_seq = lstm_states[0].shape[1]
        features_sequence = features.reshape((n_seq, -1, features.shape[-1])).swapaxes(0, 1)
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
        output, states = lstm(features_sequence, lstm_states, starts)
        return th.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), states

    def evaluate_actions(  # type: ignore[override]
        self, obs: th.Tensor, actions: th.Tensor, lstm_states: RNNStates, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        As sb3-contrib's, except that a shared core also receives the value loss's gradient
        (sb3-contrib detaches it); the rollout-time methods run without gradients and need no change.

        :param obs: observations (n_seq * seq_len, ...)
        :param actions: actions taken
        :param lstm_states: states at the start of each sequence
        :param episode_starts: (n_seq * seq_len,)
        :return: values, log-likelihood of the actions, entropy
        """
        if not self.shared_lstm:
            return super().evaluate_actions(obs, actions, lstm_states, episode_starts)
        features = cast(th.Tensor, self.extract_features(obs))  # a shared core implies shared features
        pi_states = cast(tuple[th.Tensor, th.Tensor], lstm_states.pi)
        latent, _ = self._process_sequence(features, pi_states, episode_starts, self.lstm_actor)
        latent_pi = self.mlp_extractor.forward_actor(latent)
        latent_vf = self.mlp_extractor.forward_critic(latent)
        distribution = self._get_action_dist_from_latent(latent_pi)
        entropy = cast(th.Tensor, distribution.entropy())  # every action distribution of a Discrete/Box space has one
        return self.value_net(latent_vf), distribution.log_prob(actions), entropy


class MlpRimsPolicy(RimsRecurrentPolicy):
    """:class:`RimsRecurrentPolicy` on flat vector observations (FlattenExtractor)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor, **kwargs: Any):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class CnnRimsPolicy(RimsRecurrentPolicy):
    """:class:`RimsRecurrentPolicy` on images (SB3's NatureCNN, as in the paper's Atari agents)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputRimsPolicy(RimsRecurrentPolicy):
    """:class:`RimsRecurrentPolicy` on Dict observations (CombinedExtractor)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
