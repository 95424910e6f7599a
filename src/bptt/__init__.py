"""bptt: exact BackPropagation Through Time for Elman recurrent networks, fast on the CPU."""
import logging

# library code logs through logging.getLogger("bptt") and never prints; the
# application (e.g. python -m bptt) decides where the records go
logging.getLogger(__name__).addHandler(logging.NullHandler())

# first: bptt.threads sets the OpenMP runtime's wait policy before the extensions load it
from .threads import blas_threads, get_num_threads, set_num_threads
from . import lm, rnnlm_format, tasks
from .estimators import RNNClassifier, RNNRegressor
from .model import ElmanRNN, load
from .text import Vocabulary
from .training import History, LossGrowthWarning, TrainingDiverged, TrainingInterrupted

__all__ = ["ElmanRNN", "History", "LossGrowthWarning", "RNNClassifier", "RNNRegressor",
           "TrainingDiverged", "TrainingInterrupted", "Vocabulary", "blas_threads",
           "get_num_threads", "lm", "load", "rnnlm_format", "set_num_threads", "tasks"]
__version__ = "0.1.0"
