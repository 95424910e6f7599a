"""bptt: exact BackPropagation Through Time for Elman recurrent networks, fast on the CPU."""
from .model import ElmanRNN, load
from .training import History, TrainingDiverged

__all__ = ["ElmanRNN", "History", "TrainingDiverged", "load"]
__version__ = "0.1.0"
