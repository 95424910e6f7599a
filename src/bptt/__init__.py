"""bptt: exact BackPropagation Through Time for Elman recurrent networks, fast on the CPU."""
from .estimators import RNNClassifier, RNNRegressor
from .model import ElmanRNN, load
from .text import Vocabulary
from .training import History, TrainingDiverged

__all__ = ["ElmanRNN", "History", "RNNClassifier", "RNNRegressor", "TrainingDiverged",
           "Vocabulary", "load"]
__version__ = "0.1.0"
