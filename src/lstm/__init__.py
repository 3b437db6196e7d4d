"""lstm: Long Short-Term Memory networks from their equations.

The public API. See README.md for a tour, docs/math.md for every equation beside its code.
"""

from lstm.cells import gru_cell, lstm_cell, rnn_cell
from lstm.kernels import available_backends
from lstm.layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, keras_init_
from lstm.streaming import Streamer

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "Streamer",
    "__version__",
    "available_backends",
    "gru_cell",
    "keras_init_",
    "lstm_cell",
    "rnn_cell",
]
