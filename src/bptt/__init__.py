"""bptt: exact BackPropagation Through Time for Elman recurrent networks, fast on the CPU."""
from .model import ElmanRNN

__all__ = ["ElmanRNN"]
__version__ = "0.1.0"
