"""SB3 glue: sb3-contrib's RecurrentActorCriticPolicy with a pluggable recurrent core (RIMs, LSTM or GRU).

Only the core differs between ``core="rims"`` and ``core="lstm"``: the feature extractor, heads, trainer
(``RecurrentPPO``) and rollout buffer are sb3-contrib's own.

The policies are drop-ins for sb3-contrib's ``MlpLstmPolicy`` / ``CnnLstmPolicy`` / ``MultiInputLstmPolicy``: they take
every keyword of :class:`~sb3_contrib.common.recurrent.policies.RecurrentActorCriticPolicy` with its meaning
(see :class:`RimsRecurrentPolicy` and docs/policies.md for the mapping onto the core).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from rims_rl.buffers import LaidOutState
from rims_rl.nn import GRUCore, LSTMCore, make_core

__all__ = [
    "SB3_CONTRIB_DEFAULTS",
    "CnnRimsPolicy",
    "MlpRimsPolicy",
    "MultiInputRimsPolicy",
    "RimsRecurrentPolicy",
    "StackedCore",
    "rims_layout",
]

logger = logging.getLogger(__name__)

#: sb3-contrib's defaults, used for every sb3-contrib keyword left out once any of them is given.
SB3_CONTRIB_DEFAULTS: dict[str, Any] = dict(lstm_hidden_size=256, n_lstm_layers=1, shared_lstm=False, enable_critic_lstm=True)
#: RIMs' default unit count and the paper's share of active units (k_active / n_units = 4 / 6).
DEFAULT_N_UNITS, ACTIVE_RATIO = 6, 4 / 6
#: nn.LSTM/nn.GRU arguments that other keywords spell, or that change the (n_layers, batch, hidden) state layout.
_RNN_LAYOUT_KWARGS = ("input_size", "hidden_size", "num_layers", "batch_first", "bidirectional", "proj_size")


def rims_layout(hidden_size: int, core_kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    RIMs ``core_kwargs`` whose state size ``n_units * unit_size`` is ``hidden_size`` (sb3-contrib's ``lstm_hidden_size``).

    What the user gave is kept: ``n_units`` and/or ``unit_size`` must then fit ``hidden_size``. Otherwise ``n_units`` is
    the largest count <= 6 (RIMs' default) that divides ``hidden_size``; and where ``n_units`` was not given, ``k_active``
    (unless given) keeps the paper's ratio ``k_active / n_units = 4 / 6``: ``max(1, round(2 * n_units / 3))``.

    :param hidden_size: state size of the core
    :param core_kwargs: the user's RIMs constructor arguments
    :return: ``core_kwargs`` completed with ``n_units``, ``unit_size`` and ``k_active``
    :raise ValueError: when the user's own ``core_kwargs`` contradict ``hidden_size``
    """
    _check_positive_int("lstm_hidden_size", hidden_size)
    kwargs = dict(core_kwargs)
    n_units, unit_size = kwargs.get("n_units"), kwargs.get("unit_size")
    given = f"core_kwargs n_units={n_units!r}, unit_size={unit_size!r}"
    if n_units is not None and unit_size is not None:
        if n_units * unit_size != hidden_size:
            raise ValueError(
                f"{given} give a state of {n_units * unit_size}, which contradicts lstm_hidden_size={hidden_size}"
            )
    elif n_units is not None:
        if hidden_size % n_units:
            raise ValueError(f"core_kwargs n_units={n_units} does not divide lstm_hidden_size={hidden_size}")
        kwargs["unit_size"] = hidden_size // n_units
    elif unit_size is not None:
        if hidden_size % unit_size:
            raise ValueError(f"core_kwargs unit_size={unit_size} does not divide lstm_hidden_size={hidden_size}")
        kwargs["n_units"] = hidden_size // unit_size
    else:
        kwargs["n_units"] = max(n for n in range(1, DEFAULT_N_UNITS + 1) if hidden_size % n == 0)
        kwargs["unit_size"] = hidden_size // kwargs["n_units"]
    if n_units is None and "k_active" not in kwargs:
        kwargs["k_active"] = max(1, round(ACTIVE_RATIO * kwargs["n_units"]))
    k_active = kwargs.get("k_active")
    if isinstance(k_active, int) and k_active > kwargs["n_units"]:
        raise ValueError(
            f"core_kwargs k_active={k_active} exceeds n_units={kwargs['n_units']} "
            f"(the layout for lstm_hidden_size={hidden_size})"
        )
    return kwargs


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class StackedCore(nn.Module):
    """
    Several cores run one after the other (sb3-contrib's ``n_lstm_layers``), with nn.LSTM's state layout.

    Layer ``i + 1`` reads layer ``i``'s output; with ``dropout`` > 0, that output is dropped out while training
    (nn.LSTM's ``dropout``: every layer but the last).

    :param layers: the cores, each with the call signature ``core(x, (h, c), episode_starts) -> (out, (h, c))``
        and the same ``hidden_size``
    :param dropout: dropout probability on the outputs of every layer but the last
    """

    def __init__(self, layers: list[nn.Module], dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.input_size = int(layers[0].input_size)  # type: ignore[arg-type]
        self.hidden_size = int(layers[-1].hidden_size)  # type: ignore[arg-type]
        self.dropout = nn.Dropout(dropout)

    @property
    def last_active(self) -> th.Tensor | None:
        """:return: the first layer's ``last_active`` (RIMs: (seq_len, batch, n_units) bool), None if it has none."""
        return getattr(self.layers[0], "last_active", None)

    def forward(
        self, x: th.Tensor, state: tuple[th.Tensor, th.Tensor], episode_starts: th.Tensor | None = None
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """
        :param x: (seq_len, batch, input_size)
        :param state: (h, c), each (num_layers, batch, hidden_size)
        :param episode_starts: (seq_len, batch); where non-zero, every layer's state is zeroed before that step
        :return: the last layer's output (seq_len, batch, hidden_size) and the final (h, c),
            each (num_layers, batch, hidden_size)
        """
        h, c = state
        hs, cs = [], []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            x, (h_i, c_i) = layer(x, (h[i : i + 1], c[i : i + 1]), episode_starts)
            hs.append(h_i)
            cs.append(c_i)
        return x, (th.cat(hs), th.cat(cs))


class _MultiLayerMixin:
    """An LSTM/GRU core whose torch RNN has several layers and extra constructor arguments (``lstm_kwargs``)."""

    num_layers: int
    hidden_size: int

    def forward(
        self, x: th.Tensor, state: tuple[th.Tensor, th.Tensor] | None = None, episode_starts: th.Tensor | None = None
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """As the one-layer core's, with states (num_layers, batch, hidden_size)."""
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
            state = (zeros, zeros)
        return super().forward(x, state, episode_starts)  # type: ignore[misc]


class _LSTMLayers(_MultiLayerMixin, LSTMCore):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int, **rnn_kwargs: Any) -> None:
        super().__init__(input_size, hidden_size)
        self.num_layers = num_layers
        self.rnn = nn.LSTM(input_size, hidden_size, num_layers=num_layers, **rnn_kwargs)


class _GRULayers(_MultiLayerMixin, GRUCore):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int, **rnn_kwargs: Any) -> None:
        super().__init__(input_size, hidden_size)
        self.num_layers = num_layers
        self.rnn = nn.GRU(input_size, hidden_size, num_layers=num_layers, **rnn_kwargs)


def build_core(
    core: str, input_size: int, n_layers: int, core_kwargs: dict[str, Any], lstm_kwargs: dict[str, Any]
) -> nn.Module:
    """
    One recurrent core of ``n_layers`` layers; one layer without ``lstm_kwargs`` is exactly :func:`rims_rl.make_core`'s.

    :param core: ``"rims"``, ``"lstm"`` or ``"gru"``
    :param input_size: features dimension
    :param n_layers: number of stacked layers
    :param core_kwargs: constructor arguments of each layer
    :param lstm_kwargs: sb3-contrib's ``lstm_kwargs``: nn.LSTM/nn.GRU arguments (lstm/gru), ``dropout`` between layers (rims)
    :return: a module with the call signature ``core(x, (h, c), episode_starts)``, states (n_layers, batch, hidden_size)
    """
    if core == "rims":
        first = make_core(core, input_size, **core_kwargs)
        if n_layers == 1:
            return first
        hidden = int(first.hidden_size)  # type: ignore[arg-type]
        layers = [first] + [make_core(core, hidden, **core_kwargs) for _ in range(n_layers - 1)]
        return StackedCore(layers, dropout=float(lstm_kwargs.get("dropout", 0.0)))
    if n_layers == 1 and not lstm_kwargs:
        return make_core(core, input_size, **core_kwargs)
    hidden = int(make_core(core, input_size, **core_kwargs).hidden_size)  # type: ignore[arg-type]  # validates core_kwargs
    layers_cls = _LSTMLayers if core == "lstm" else _GRULayers
    try:
        return layers_cls(input_size, hidden, n_layers, **lstm_kwargs)
    except TypeError as error:
        raise ValueError(f"lstm_kwargs {lstm_kwargs} are not arguments of nn.{core.upper()}: {error}") from None


class RimsRecurrentPolicy(RecurrentActorCriticPolicy):
    """
    Recurrent actor-critic policy whose recurrent core is RIMs, an LSTM or a GRU; a drop-in for sb3-contrib's.

    The core keeps sb3-contrib's state layout: (h, c), each (n_lstm_layers, n_envs, hidden_size), and is reached as
    ``self.lstm_actor`` (and ``self.lstm_critic`` with a separate critic core) as in sb3-contrib.

    Two spellings configure the core. The package's own: ``core``, ``core_kwargs``, ``shared_core`` (default: one
    RIMs core, 6 units x 64, shared by actor and critic and trained by both losses, as in the paper). sb3-contrib's:
    ``lstm_hidden_size``, ``n_lstm_layers``, ``shared_lstm``, ``enable_critic_lstm``, ``lstm_kwargs``, with
    sb3-contrib's meaning; once any of them is given, those left out take sb3-contrib's defaults
    (:data:`SB3_CONTRIB_DEFAULTS`: a separate critic core of 256, one layer). The two spellings may be mixed where
    they agree; a contradiction is a ``ValueError``.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param core: ``"rims"`` (default), ``"lstm"`` or ``"gru"``
    :param core_kwargs: constructor arguments of each core layer (see :class:`rims_rl.RIMs`; ``hidden_size`` for lstm/gru)
    :param shared_core: one core shared by actor and critic and trained by both losses (the paper's setup; default
        when no sb3-contrib keyword is given); False: a separate critic core or a feedforward critic (``enable_critic_lstm``)
    :param skip_padding: run the feature extractor once for all all-zero observation rows of a batch. sb3-contrib
        pads training sequences with all-zero observations (about half the rows of an Atari minibatch), so this
        halves the extractor's work there; every row still gets exactly the features it would have got
    :param lstm_hidden_size: state size of each core layer. RIMs: ``n_units * unit_size``, laid out by
        :func:`rims_layout` (e.g. 256 -> 4 units of 64, k_active 3); lstm/gru: ``hidden_size``
    :param n_lstm_layers: number of stacked core layers (RIMs layers too); states are (n_lstm_layers, batch, hidden)
    :param shared_lstm: sb3-contrib's shared core: the critic reads the actor's core but, unlike ``shared_core``,
        only the actor's loss trains it (sb3-contrib detaches the value path)
    :param enable_critic_lstm: without a shared core: a separate critic core (default, as sb3-contrib) or, if False,
        sb3-contrib's feedforward critic (a linear layer from the features)
    :param lstm_kwargs: lstm/gru: further arguments of ``nn.LSTM`` / ``nn.GRU`` (e.g. ``dropout`` between layers,
        ``bias``); rims: only ``dropout`` (between stacked layers; RIMs' own options go in ``core_kwargs``)
    :param kwargs: the other arguments of ``ActorCriticPolicy`` (net_arch, features extractor, share_features_extractor, ...)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        core: str = "rims",
        core_kwargs: dict[str, Any] | None = None,
        shared_core: bool | None = None,
        skip_padding: bool = True,
        lstm_hidden_size: int | None = None,
        n_lstm_layers: int | None = None,
        shared_lstm: bool | None = None,
        enable_critic_lstm: bool | None = None,
        lstm_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        sb3_spelling = any(
            v is not None for v in (lstm_hidden_size, n_lstm_layers, shared_lstm, enable_critic_lstm, lstm_kwargs)
        )
        shared, critic_core, self.value_loss_trains_core = _critic_layout(
            shared_core, shared_lstm, enable_critic_lstm, sb3_spelling, kwargs.get("share_features_extractor", True)
        )
        n_layers = 1 if n_lstm_layers is None else n_lstm_layers
        _check_positive_int("n_lstm_layers", n_layers)
        self.core_name = core
        self.core_kwargs = _resolve_core_kwargs(core, dict(core_kwargs or {}), lstm_hidden_size, sb3_spelling)
        self.shared_core = shared
        self.skip_padding = skip_padding
        self.n_lstm_layers = n_layers
        rnn_kwargs = _check_lstm_kwargs(core, dict(lstm_kwargs or {}))
        # Validate the core options and learn the state size before the heads are built (this draws one core's
        # initial weights from the RNG, as the policy always has: seeded runs keep their initial weights).
        hidden_size = int(make_core(core, 1, **self.core_kwargs).hidden_size)  # type: ignore[arg-type]
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            lstm_hidden_size=hidden_size,
            n_lstm_layers=n_layers,
            shared_lstm=shared,
            enable_critic_lstm=critic_core,
            **kwargs,
        )
        self.lstm_kwargs = rnn_kwargs
        # Replace sb3-contrib's nn.LSTM modules by the chosen core(s), then rebuild the optimizer over them.
        self.lstm_actor = build_core(core, self.features_dim, n_layers, self.core_kwargs, rnn_kwargs)  # type: ignore[assignment]
        if self.lstm_critic is not None:
            self.lstm_critic = build_core(core, self.features_dim, n_layers, self.core_kwargs, rnn_kwargs)  # type: ignore[assignment]
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            core=self.core_name,
            core_kwargs=self.core_kwargs,
            skip_padding=self.skip_padding,
            lstm_hidden_size=self.lstm_output_dim,
            n_lstm_layers=self.n_lstm_layers,
            shared_lstm=self.shared_lstm,
            # shared_core=True is the shared core trained by both losses; shared_lstm alone, sb3-contrib's detached one.
            shared_core=self.shared_core if self.value_loss_trains_core or not self.shared_lstm else None,
            enable_critic_lstm=self.enable_critic_lstm,
            lstm_kwargs=self.lstm_kwargs,
        )
        return data

    def core_policy_kwargs(self) -> dict[str, Any]:
        """:return: ``core`` and the resolved ``core_kwargs`` (the layout chosen for ``lstm_hidden_size``), to save."""
        return dict(core=self.core_name, core_kwargs=dict(self.core_kwargs))

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

        :param obs: observations (batch, ...), including (batch,) for Discrete spaces
        :param features_extractor: as SB3's
        :return: features (batch, features_dim), or (actor, critic) features without a shared extractor
        """
        if not (self.skip_padding and isinstance(obs, th.Tensor) and obs.shape[0] > 2):
            return super().extract_features(obs, features_extractor)
        zero = obs.reshape(obs.shape[0], -1).eq(0).all(1)  # bool whatever the dtype (any() on uint8 returns uint8)
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

        :param features: (n_seq * seq_len, features_dim), sequence-major as sb3-contrib's rollout buffer lays it out;
            or, with a :class:`~rims_rl.buffers.LaidOutState`, the unpadded rows of a minibatch in its layout
        :param lstm_states: (h, c), each (n_layers, n_seq, hidden_size)
        :param episode_starts: (n_seq * seq_len,)
        :param lstm: the core
        :return: core output (n_seq * seq_len, hidden_size) and the final (h, c)
        """
        if isinstance(lstm_states, LaidOutState):
            return _process_laid_out(features, lstm_states, episode_starts, lstm)
        n_seq = lstm_states[0].shape[1]
        features_sequence = features.reshape((n_seq, -1, features.shape[-1])).swapaxes(0, 1)
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
        output, states = lstm(features_sequence, lstm_states, starts)
        return th.flatten(output.transpose(0, 1), start_dim=0, end_dim=1), states

    def sequence_layout(self) -> str:
        """
        :return: how the rollout buffer of rims_rl's RecurrentPPO lays out training sequences for this policy's
            core (:mod:`rims_rl.buffers`): ``"lanes"`` for RIMs (resets inside the core are cheap), ``"sequences"``
            for the torch RNNs (one fused call over the sequences as sb3-contrib pads them; a reset inside would
            cut that call, and torch's packed sequences measured slower on CPU)
        """
        return "lanes" if self.core_name == "rims" else "sequences"

    def evaluate_actions(  # type: ignore[override]
        self, obs: th.Tensor, actions: th.Tensor, lstm_states: RNNStates, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        As sb3-contrib's, except that a ``shared_core`` also receives the value loss's gradient
        (sb3-contrib's ``shared_lstm`` detaches it); the rollout-time methods run without gradients and need no change.

        :param obs: observations (n_seq * seq_len, ...)
        :param actions: actions taken
        :param lstm_states: states at the start of each sequence
        :param episode_starts: (n_seq * seq_len,)
        :return: values, log-likelihood of the actions, entropy
        """
        if not (self.shared_lstm and self.value_loss_trains_core):
            return super().evaluate_actions(obs, actions, lstm_states, episode_starts)
        features = cast(th.Tensor, self.extract_features(obs))  # a shared core implies shared features
        pi_states = cast(tuple[th.Tensor, th.Tensor], lstm_states.pi)
        latent, _ = self._process_sequence(features, pi_states, episode_starts, self.lstm_actor)
        latent_pi = self.mlp_extractor.forward_actor(latent)
        latent_vf = self.mlp_extractor.forward_critic(latent)
        distribution = self._get_action_dist_from_latent(latent_pi)
        entropy = cast(th.Tensor, distribution.entropy())  # every action distribution of a Discrete/Box space has one
        return self.value_net(latent_vf), distribution.log_prob(actions), entropy


def _process_laid_out(
    features: th.Tensor, lstm_states: LaidOutState, episode_starts: th.Tensor, core: nn.Module
) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
    """
    Run the core over an unpadded minibatch placed in its (time, lane) grid (see :mod:`rims_rl.buffers`).

    :param features: (n_rows, features_dim) in minibatch order
    :param lstm_states: each lane's initial (h, c), (n_layers, n_lanes, hidden_size), with the layout
    :param episode_starts: (n_rows,)
    :param core: the core
    :return: core output (n_rows, hidden_size) in minibatch order, and the states after the grid's last step
    """
    layout = lstm_states.layout
    grid = (layout.n_steps, layout.n_lanes)
    x = th.cat([features, features.new_zeros(1, features.shape[1])])[layout.rows].view(*grid, -1)
    starts = th.cat([episode_starts, episode_starts.new_zeros(1)])[layout.rows].view(grid)
    output, states = core(x, (lstm_states[0], lstm_states[1]), starts)
    return output.reshape(layout.n_steps * layout.n_lanes, -1)[layout.cells], states


def _critic_layout(
    shared_core: bool | None,
    shared_lstm: bool | None,
    enable_critic_lstm: bool | None,
    sb3_spelling: bool,
    share_features_extractor: bool,
) -> tuple[bool, bool, bool]:
    """
    :return: (one core shared by actor and critic, a separate critic core, the value loss trains the shared core)
    """
    if shared_core is not None and shared_lstm is not None and shared_core != shared_lstm:
        raise ValueError(f"shared_core={shared_core} contradicts shared_lstm={shared_lstm}; give one of them")
    if shared_core is not None:
        shared = shared_core
    elif shared_lstm is not None:
        shared = shared_lstm
    else:  # sb3-contrib's default, or the paper's shared core (separate extractors imply separate cores)
        shared = False if sb3_spelling else share_features_extractor
    if shared and enable_critic_lstm:
        raise ValueError("enable_critic_lstm=True needs an unshared core (shared_core/shared_lstm False)")
    if shared and not share_features_extractor:
        raise ValueError("share_features_extractor=False needs an unshared core (a shared core needs shared features)")
    critic_core = (not shared) if enable_critic_lstm is None else enable_critic_lstm
    # shared_lstm alone has sb3-contrib's meaning (the value path is detached); shared_core, the paper's.
    return shared, critic_core, shared and (shared_core is not None or shared_lstm is None)


def _resolve_core_kwargs(
    core: str, core_kwargs: dict[str, Any], lstm_hidden_size: int | None, sb3_spelling: bool
) -> dict[str, Any]:
    """
    :return: ``core_kwargs`` with the state size written out: that of ``lstm_hidden_size``, or of sb3-contrib's
        default 256 when sb3-contrib's keywords are used and ``core_kwargs`` leave the size open, or else the
        core's own (its defaults completed by ``core_kwargs``; RIMs: ``n_units``, ``unit_size``, ``k_active``)
    """
    size_keys = ("n_units", "unit_size") if core == "rims" else ("hidden_size",)
    hidden = lstm_hidden_size
    if hidden is None and sb3_spelling and not any(k in core_kwargs for k in size_keys):
        hidden = SB3_CONTRIB_DEFAULTS["lstm_hidden_size"]
    chosen = hidden is not None
    if hidden is None:
        hidden = _state_size(core, core_kwargs)
    if core != "rims":
        _check_positive_int("lstm_hidden_size", hidden)
        if core_kwargs.get("hidden_size", hidden) != hidden:
            raise ValueError(f"core_kwargs hidden_size={core_kwargs['hidden_size']} contradicts lstm_hidden_size={hidden}")
        return {**core_kwargs, "hidden_size": hidden}
    layout = rims_layout(hidden, core_kwargs)
    if chosen and "n_units" not in core_kwargs:
        message = "lstm_hidden_size=%d: RIMs layout n_units=%d x unit_size=%d, k_active=%s"
        args = (hidden, layout["n_units"], layout["unit_size"], layout.get("k_active"))
        if layout["n_units"] != DEFAULT_N_UNITS:  # the default unit count does not divide the size
            logger.warning(message + " (%d units do not divide it)", *args, DEFAULT_N_UNITS)
        else:
            logger.info(message, *args)
    return layout


def _state_size(core: str, core_kwargs: dict[str, Any]) -> int:
    """:return: the state size of a core built from ``core_kwargs`` (the RNG is left as it was)."""
    with th.random.fork_rng(devices=[]):
        return int(make_core(core, 1, **core_kwargs).hidden_size)  # type: ignore[arg-type]


def _check_lstm_kwargs(core: str, lstm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """:return: ``lstm_kwargs`` once checked against the core (see :class:`RimsRecurrentPolicy`)."""
    layout = sorted(set(lstm_kwargs) & set(_RNN_LAYOUT_KWARGS))
    if layout:
        raise ValueError(f"lstm_kwargs {layout} are not supported: the state layout is (n_lstm_layers, batch, hidden)")
    if core == "rims":
        other = sorted(set(lstm_kwargs) - {"dropout"} - ({"bias"} if lstm_kwargs.get("bias", True) is True else set()))
        if other:
            raise ValueError(f"lstm_kwargs {other} have no RIMs counterpart; RIMs options go in core_kwargs")
        lstm_kwargs.pop("bias", None)
    if not 0.0 <= float(lstm_kwargs.get("dropout", 0.0)) < 1.0:
        raise ValueError(f"lstm_kwargs dropout must be in [0, 1), got {lstm_kwargs['dropout']!r}")
    return lstm_kwargs


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
