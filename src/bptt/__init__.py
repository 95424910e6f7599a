"""bptt: exact BackPropagation Through Time for Elman recurrent networks, fast on the CPU."""
from .model import ElmanRNN
from .threads import blas_threads, get_num_threads, set_num_threads

__all__ = ["ElmanRNN", "blas_threads", "get_num_threads", "set_num_threads"]
__version__ = "0.1.0"
