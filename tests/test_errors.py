"""Bad arguments and bad inputs raise what torch.nn raises: same exception type, same message
(where torch's message comes from its own checks), or a clearer message of the same type (where
torch's comes from deep inside its kernels)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm

PAIRS = [(lstm.LSTM, nn.LSTM), (lstm.GRU, nn.GRU), (lstm.RNN, nn.RNN)]


def _raised(fn):
    try:
        fn()
    except Exception as e:
        return type(e), str(e)
    return None


def _same_error(ours, theirs):
    got, want = _raised(ours), _raised(theirs)
    assert want is not None, "torch accepted this; the test case is wrong"
    assert got == want


BAD_CONSTRUCTORS = [
    dict(input_size=4, hidden_size=0),
    dict(input_size=4, hidden_size=-3),
    dict(input_size=0, hidden_size=3),
    dict(input_size=4.0, hidden_size=3),
    dict(input_size=4, hidden_size=3.5),
    dict(input_size=4, hidden_size=3, num_layers=0),
    dict(input_size=4, hidden_size=3, dropout=1.5),
    dict(input_size=4, hidden_size=3, dropout=-0.1),
    dict(input_size=4, hidden_size=3, dropout=True),
    dict(input_size=4, hidden_size=3, bias="yes"),
    dict(input_size=4, hidden_size=3, batch_first=1),
]


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS)
@pytest.mark.parametrize("kwargs", BAD_CONSTRUCTORS, ids=str)
def test_constructor_errors_match_torch(ours_cls, torch_cls, kwargs):
    _same_error(lambda: ours_cls(**kwargs), lambda: torch_cls(**kwargs))


@pytest.mark.parametrize(
    "kwargs", [dict(proj_size=3), dict(proj_size=5), dict(proj_size=-1)], ids=str
)
def test_lstm_projection_errors_match_torch(kwargs):
    _same_error(lambda: lstm.LSTM(4, 3, **kwargs), lambda: nn.LSTM(4, 3, **kwargs))


@pytest.mark.parametrize("ours_cls,torch_cls", [(lstm.GRU, nn.GRU), (lstm.RNN, nn.RNN)])
def test_proj_size_on_gru_and_rnn_is_refused_like_torch(ours_cls, torch_cls):
    _same_error(lambda: ours_cls(4, 3, proj_size=2), lambda: torch_cls(4, 3, proj_size=2))


def test_rnn_unknown_nonlinearity_like_torch():
    _same_error(
        lambda: lstm.RNN(4, 3, nonlinearity="gelu"), lambda: nn.RNN(4, 3, nonlinearity="gelu")
    )
    _same_error(lambda: lstm.RNN(4, 3, 1, "sigmoid"), lambda: nn.RNN(4, 3, 1, "sigmoid"))


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        lstm.LSTM(4, 3, dropout=0.5)


def _state(kind, shape_h, shape_c=None, dtype=torch.float32):
    h = torch.zeros(*shape_h, dtype=dtype)
    return (h, torch.zeros(*(shape_c or shape_h))) if kind is lstm.LSTM else h


BAD_INPUTS = [
    ("4-D input", lambda k: (torch.randn(1, 2, 3, 4), None)),
    ("1-D input", lambda k: (torch.randn(4), None)),
    ("wrong input size", lambda k: (torch.randn(5, 2, 3), None)),
    ("input dtype", lambda k: (torch.randn(5, 2, 4, dtype=torch.float64), None)),
    ("integer input", lambda k: (torch.ones(5, 2, 4, dtype=torch.long), None)),
    ("state batch mismatch", lambda k: (torch.randn(5, 2, 4), _state(k, (1, 3, 3)))),
    ("state layers mismatch", lambda k: (torch.randn(5, 2, 4), _state(k, (2, 2, 3)))),
    ("state size mismatch", lambda k: (torch.randn(5, 2, 4), _state(k, (1, 2, 5)))),
    ("2-D state for batched", lambda k: (torch.randn(5, 2, 4), _state(k, (2, 3)))),
    ("3-D state for unbatched", lambda k: (torch.randn(5, 4), _state(k, (1, 1, 3)))),
    ("empty sequence", lambda k: (torch.randn(0, 2, 4), None)),
]


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS)
@pytest.mark.parametrize("name,make", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_forward_errors_match_torch(ours_cls, torch_cls, name, make):
    torch.manual_seed(0)
    theirs = torch_cls(4, 3)
    ours = ours_cls.from_torch(theirs)
    x, hx = make(ours_cls)
    _same_error(lambda: ours(x, hx), lambda: theirs(x, hx))


def test_lstm_cell_state_size_mismatch_like_torch():
    theirs = nn.LSTM(4, 3)
    ours = lstm.LSTM.from_torch(theirs)
    x = torch.randn(5, 2, 4)
    hx = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    _same_error(lambda: ours(x, hx), lambda: theirs(x, hx))


def test_packed_input_with_wrong_state_batch_is_a_clear_runtime_error():
    """torch reports this one from inside a broadcast; we say which size was expected."""
    ours = lstm.LSTM(4, 3)
    packed = pack_padded_sequence(torch.randn(5, 3, 4), torch.tensor([5, 3, 2]))
    hx = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    assert _raised(lambda: nn.LSTM(4, 3)(packed, hx))[0] is RuntimeError
    with pytest.raises(
        RuntimeError, match=r"Expected hidden\[0\] size \(1, 3, 3\), got \[1, 2, 3\]"
    ):
        ours(packed, hx)


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS)
def test_state_dtype_mismatch_is_a_clear_runtime_error(ours_cls, torch_cls):
    """torch raises RuntimeError with an internal message ('get_mkldnn_dtype: unsupported data
    type', 'mat1 and mat2 must have the same dtype'); ours names the two dtypes."""
    x = torch.randn(5, 2, 4)
    hx = _state(ours_cls, (1, 2, 3), dtype=torch.float64)
    assert _raised(lambda: torch_cls(4, 3)(x, hx))[0] is RuntimeError
    with pytest.raises(
        RuntimeError, match=r"hx dtype \(torch.float64\) does not match input dtype"
    ):
        ours_cls(4, 3)(x, hx)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"backend should be 'auto' or one of .*got 'cuda-magic'"):
        lstm.LSTM(4, 3, backend="cuda-magic")(torch.randn(2, 1, 4))


def test_runs_here_and_describe_say_what_a_backend_name_means_on_this_machine():
    from lstm.kernels import describe, runs_here

    assert runs_here("auto") and runs_here("torch") and runs_here("bptt")
    assert not runs_here("cuda-magic")
    assert describe("bptt") == "bptt"
    assert describe("auto").startswith("auto -> ")


CELL_PAIRS = [(lstm.LSTMCell, nn.LSTMCell), (lstm.GRUCell, nn.GRUCell), (lstm.RNNCell, nn.RNNCell)]


def _cell_state(cls, shape):
    h = torch.zeros(*shape)
    return (h, torch.zeros(*shape)) if cls is lstm.LSTMCell else h


BAD_CELL_INPUTS = [
    ("3-D input", lambda k: (torch.randn(1, 2, 4), None)),
    ("wrong input size", lambda k: (torch.randn(2, 5), None)),
    ("batch mismatch", lambda k: (torch.randn(2, 4), _cell_state(k, (3, 3)))),
    ("hidden size", lambda k: (torch.randn(2, 4), _cell_state(k, (2, 2)))),
    ("3-D hidden", lambda k: (torch.randn(2, 4), _cell_state(k, (1, 2, 3)))),
]


@pytest.mark.parametrize("ours_cls,torch_cls", CELL_PAIRS)
@pytest.mark.parametrize("name,make", BAD_CELL_INPUTS, ids=[b[0] for b in BAD_CELL_INPUTS])
def test_cell_errors_match_torch(ours_cls, torch_cls, name, make):
    theirs = torch_cls(4, 3)
    ours = ours_cls.from_torch(theirs)
    x, hx = make(ours_cls)
    _same_error(lambda: ours(x, hx), lambda: theirs(x, hx))


def test_lstm_cell_c_size_like_torch():
    theirs = nn.LSTMCell(4, 3)
    ours = lstm.LSTMCell.from_torch(theirs)
    hx = (torch.zeros(2, 3), torch.zeros(2, 2))
    _same_error(lambda: ours(torch.randn(2, 4), hx), lambda: theirs(torch.randn(2, 4), hx))


def test_rnn_cell_unknown_nonlinearity_at_forward_like_torch():
    _same_error(
        lambda: lstm.RNNCell(4, 3, nonlinearity="gelu")(torch.randn(2, 4)),
        lambda: nn.RNNCell(4, 3, nonlinearity="gelu")(torch.randn(2, 4)),
    )


@pytest.mark.parametrize("ours_cls,torch_cls", CELL_PAIRS)
def test_cell_dtype_mismatch_is_a_clear_runtime_error(ours_cls, torch_cls):
    x = torch.randn(2, 4, dtype=torch.float64)
    assert _raised(lambda: torch_cls(4, 3)(x))[0] is RuntimeError
    with pytest.raises(RuntimeError, match=r"input dtype \(torch.float64\) does not match weight"):
        ours_cls(4, 3)(x)
