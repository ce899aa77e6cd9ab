"""Behaviour of the RIMs core (rims_rl.nn) against the paper's four steps and nn.LSTM's interface."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
import torch as th

from rims_rl.nn import GRUCore, LSTMCore, RIMs, make_core

IN, UNITS, K, D = 7, 5, 2, 6
VARIANTS = [
    dict(cell=cell, selection=sel, communication=comm, residual=res)
    for cell, sel, (comm, res) in itertools.product(
        ("lstm", "gru"), ("null", "across_units"), ((True, "plain"), (True, "gated"), (False, "plain"))
    )
]


def small_rims(**kwargs) -> RIMs:
    th.manual_seed(0)
    base = dict(
        n_units=UNITS, k_active=K, unit_size=D, input_key_size=8, input_value_size=5, comm_key_size=4, comm_value_size=3
    )
    base.update(kwargs)
    return RIMs(IN, **base)


def random_state(batch: int, hidden: int) -> tuple[th.Tensor, th.Tensor]:
    return th.randn(1, batch, hidden), th.randn(1, batch, hidden)


def units(s: th.Tensor) -> th.Tensor:
    """(1, B, kT * d) -> (B, kT, d)"""
    return s[0].view(s.shape[1], UNITS, D)


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_exactly_k_active_units_update_and_inactive_are_bitwise_unchanged(kwargs):
    core = small_rims(**kwargs)
    batch = 4
    h, c = random_state(batch, core.hidden_size)
    x = th.randn(6, batch, IN)
    for t in range(x.shape[0]):
        _, (h_new, c_new) = core(x[t : t + 1], (h, c))
        active = core.last_active[0]  # (B, kT)
        assert active.shape == (batch, UNITS)
        assert (active.sum(-1) == K).all()
        changed_h = (units(h_new) != units(h)).any(-1)
        assert th.equal(changed_h, active), "exactly the active units change h"
        if kwargs["cell"] == "lstm":
            assert th.equal((units(c_new) != units(c)).any(-1), active)
        else:
            assert th.equal(c_new, c), "the GRU hands its unused second tensor back"
        inactive = ~active
        assert th.equal(units(h_new)[inactive], units(h)[inactive])
        assert th.equal(units(c_new)[inactive], units(c)[inactive])
        h, c = h_new, c_new


@pytest.mark.parametrize("kwargs", VARIANTS[:3] + VARIANTS[6:7], ids=lambda k: "-".join(str(v) for v in k.values()))
def test_episode_start_equals_fresh_run_and_leaves_other_envs_alone(kwargs):
    core = small_rims(**kwargs)
    batch, steps = 3, 5
    x = th.randn(steps, batch, IN)
    state = random_state(batch, core.hidden_size)
    starts = th.zeros(steps, batch)
    starts[0, 1] = 1.0  # env 1 starts a new episode at step 0
    out, (h, _c) = core(x, state, starts)

    fresh, (h_fresh, _c_fresh) = core(x[:, 1:2], None)
    assert th.allclose(out[:, 1:2], fresh, atol=1e-6)
    assert th.allclose(h[:, 1:2], h_fresh, atol=1e-6)
    others = [0, 2]
    plain, (h_plain, _) = core(x[:, others], (state[0][:, others], state[1][:, others]))
    assert th.allclose(out[:, others], plain, atol=1e-6)
    assert th.allclose(h[:, others], h_plain, atol=1e-6)


def step_by_step(core, x, state, starts):
    outs = []
    h, c = state
    for t in range(x.shape[0]):
        keep = (1.0 - starts[t]).view(1, -1, 1)
        out, (h, c) = core(x[t : t + 1], (h * keep, c * keep))
        outs.append(out)
    return th.cat(outs), (h, c)


CORES = [
    pytest.param(lambda: small_rims(), id="rims-lstm"),
    pytest.param(lambda: small_rims(cell="gru", selection="across_units", residual="gated"), id="rims-gru"),
    pytest.param(lambda: LSTMCore(IN, 12), id="lstm"),
    pytest.param(lambda: GRUCore(IN, 12), id="gru"),
]


@pytest.mark.parametrize("make", CORES)
def test_whole_sequence_with_random_episode_starts_equals_step_loop(make):
    core = make()
    th.manual_seed(1)
    steps, batch = 20, 6
    x = th.randn(steps, batch, IN)
    state = random_state(batch, core.hidden_size)
    starts = (th.rand(steps, batch) < 0.2).float()
    out, (h, c) = core(x, state, starts)
    ref, (h_ref, c_ref) = step_by_step(core, x, state, starts)
    assert th.allclose(out, ref, atol=1e-5)
    assert th.allclose(h, h_ref, atol=1e-5)
    if getattr(core, "cell", "lstm") == "lstm" and getattr(core, "has_cell_state", True):
        assert th.allclose(c, c_ref, atol=1e-5)
    else:
        assert th.equal(c, state[1]), "a GRU core hands its unused second tensor back as given"


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_gradients_reach_every_parameter(kwargs):
    core = small_rims(**kwargs)
    x = th.randn(12, 4, IN)
    out, (_h, c) = core(x, random_state(4, core.hidden_size))
    (out.pow(2).sum() + c.sum()).backward()
    for name, p in core.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_all_units_active_when_k_active_equals_n_units():
    core = small_rims(k_active=UNITS)
    core(th.randn(8, 3, IN), random_state(3, core.hidden_size))
    assert core.last_active.shape == (8, 3, UNITS)
    assert core.last_active.all()


def test_switching_communication_off_changes_nothing_else():
    with_comm = small_rims(communication=True)
    without = small_rims(communication=False)
    comm_names = {n for n, _ in with_comm.named_parameters() if n.startswith("comm_")}
    assert comm_names, "the communicating core has communication parameters"
    assert {n for n, _ in without.named_parameters()} == {n for n, _ in with_comm.named_parameters()} - comm_names
    # Same weights everywhere else and a zero communication output: identical behaviour.
    without.load_state_dict({k: v for k, v in with_comm.state_dict().items() if k not in comm_names})
    with th.no_grad():
        with_comm.comm_out.weight.zero_()
        with_comm.comm_out.bias.zero_()
    x, state = th.randn(10, 3, IN), random_state(3, with_comm.hidden_size)
    starts = (th.rand(10, 3) < 0.2).float()
    out_a, (h_a, c_a) = with_comm(x, state, starts)
    out_b, (h_b, c_b) = without(x, state, starts)
    assert th.equal(out_a, out_b) and th.equal(h_a, h_b) and th.equal(c_a, c_b)
    assert th.equal(with_comm.last_active, without.last_active)


def test_looks_like_nn_lstm():
    core = small_rims()
    assert (core.input_size, core.hidden_size, core.num_layers) == (IN, UNITS * D, 1)
    out, (h, c) = core(th.randn(4, 2, IN), (th.zeros(1, 2, UNITS * D), th.zeros(1, 2, UNITS * D)))
    assert out.shape == (4, 2, UNITS * D) and h.shape == c.shape == (1, 2, UNITS * D)
    assert th.equal(out[-1:], h), "output at the last step is the final h, as in nn.LSTM"
    lstm = th.nn.LSTM(IN, UNITS * D)
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers) == (core.input_size, core.hidden_size, core.num_layers)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(k_active=UNITS + 1), "k_active"),
        (dict(k_active=0), "k_active"),
        (dict(n_units=0), "n_units"),
        (dict(unit_size=-3), "unit_size"),
        (dict(input_key_size=0), "input_key_size"),
        (dict(comm_heads=0), "comm_heads"),
        (dict(cell="rnn"), "cell must be one of 'lstm', 'gru'"),
        (dict(selection="softmax"), "selection must be one of 'null', 'across_units'"),
        (dict(residual="skip"), "residual"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_invalid_configuration_raises_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_rims(**kwargs)


def test_input_of_wrong_size_raises_value_error():
    core = small_rims()
    with pytest.raises(ValueError, match=f"input_size={IN}"):
        core(th.randn(3, 2, IN + 1))
    with pytest.raises(ValueError, match="hidden_size"):
        core(th.randn(3, 2, IN), (th.zeros(1, 2, 5), th.zeros(1, 2, 5)))
    with pytest.raises(ValueError, match="episode_starts"):
        core(th.randn(3, 2, IN), None, th.zeros(2, 3))


def test_make_core_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="core must be one of 'rims', 'lstm', 'gru'"):
        make_core("transformer", 4)
    with pytest.raises(ValueError, match="unknown core_kwargs"):
        make_core("lstm", 4, n_units=3)
    assert make_core("gru", 4, hidden_size=9).hidden_size == 9


def test_core_has_no_sb3_or_gym_imports():
    forbidden = {"stable_baselines3", "sb3_contrib", "gymnasium", "gym", "minigrid", "ale_py", "envpool"}
    for path in (Path(__file__).parents[1] / "rims_rl" / "nn").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
                if name.startswith("rims_rl"):
                    assert name.startswith("rims_rl.nn"), f"{path.name} imports {name} from outside the core"


@pytest.mark.parametrize(
    "make",
    [
        lambda: small_rims(),  # the fused path (compiled where available)
        lambda: small_rims(native=False),  # the fused PyTorch path
        lambda: small_rims(fused=False),  # the autograd step
        lambda: small_rims(cell="gru"),
        lambda: LSTMCore(IN, 12),
        lambda: GRUCore(IN, 12),
    ],
    ids=["rims", "rims-torch", "rims-autograd", "rims-gru", "lstm", "gru"],
)
def test_an_episode_start_clears_a_nan_or_inf_state(make):
    core = make()
    batch, steps = 3, 4
    x = th.randn(steps, batch, IN)
    h, c = random_state(batch, core.hidden_size)
    h[0, 0, 0], c[0, 0, 1], h[0, 2, 3] = float("nan"), float("inf"), float("nan")
    starts = th.zeros(steps, batch)
    starts[0, 0] = 1.0  # env 0 starts; env 2 keeps its NaN
    out, (h_n, c_n) = core(x, (h, c), starts)
    fresh, (h_fresh, _) = core(x[:, :1], None)
    assert th.isfinite(out[:, 0]).all() and th.isfinite(h_n[:, 0]).all()
    has_cell_state = not isinstance(core, GRUCore) and getattr(core, "cell", "lstm") == "lstm"
    assert th.isfinite(c_n[:, 0]).all() or not has_cell_state, "a GRU hands its unused second tensor back as given"
    assert th.allclose(out[:, :1], fresh, atol=1e-6) and th.allclose(h_n[:, :1], h_fresh, atol=1e-6)
    assert th.isnan(out[:, 2]).any(), "an env without a start keeps its state"


def test_query_bias_false_is_the_papers_form_and_the_default_keeps_the_earlier_parameters():
    paper, biased = small_rims(query_bias=False), small_rims()
    gates = 4 * D
    assert paper.recurrent.bias.shape == (UNITS, 1, gates), "the bias covers the gates only: q = h W^q (section 2.2)"
    assert biased.recurrent.bias.shape == (UNITS, 1, gates + 8), "query_bias=True: one bias over gates and queries"
    assert list(paper.state_dict()) == list(biased.state_dict())
    assert {n: p.shape for n, p in biased.named_parameters() if n != "recurrent.bias"} == {
        n: p.shape for n, p in paper.named_parameters() if n != "recurrent.bias"
    }
    # the earlier cores (saved with the query bias) load into query_bias=True and act identically
    biased_copy = small_rims()
    biased_copy.load_state_dict(biased.state_dict())
    x = th.randn(5, 2, IN)
    assert th.equal(biased_copy(x)[0], biased(x)[0])
    # a core built without the query bias becomes the saved one on loading, and an optimizer built before stays valid
    optimizer = th.optim.Adam(paper.parameters())
    paper.load_state_dict(biased.state_dict())
    assert paper.query_bias and paper.recurrent.bias.shape == biased.recurrent.bias.shape
    assert th.equal(paper(x)[0], biased(x)[0])
    paper(x)[0].sum().backward()
    optimizer.step()


def test_without_query_bias_a_zero_state_ties_all_units_and_the_lowest_ones_win():
    for core in (
        small_rims(query_bias=False),
        small_rims(query_bias=False, native=False),
        small_rims(query_bias=False, fused=False),
    ):
        core(th.randn(1, 3, IN))
        assert th.equal(core.last_active[0], th.tensor([[True] * K + [False] * (UNITS - K)] * 3))
