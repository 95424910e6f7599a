# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Online (batch 1) training of token language models, word by word in C (_online.h).

One call trains on a chunk of one stream with plain SGD in RNNLM's update order or in
bptt's TBPTT(k1, k2) order; what carries over between chunks lives in buffers that the
caller keeps (bptt.online). The caller has validated every token id, size and dtype.
"""
from cython cimport floating

cdef extern from "_online.h":
    int BPTT_ORDER_RNNLM, BPTT_ORDER_BLOCK
    ctypedef struct bptt_online_pos:
        Py_ssize_t step, since_reset, pending
    ctypedef struct bptt_online_args:
        void *V
        void *U
        void *b_h
        void *W
        void *b_o
        void *W_c
        void *b_c
        const Py_ssize_t *starts
        const Py_ssize_t *word_class
        Py_ssize_t H, O, C
        int act, order
        Py_ssize_t k1, k2
        double lr, beta, error_clip
        Py_ssize_t eos
        const void *h0
        void *states
        void *errors
        Py_ssize_t *inputs
        void *work
        void *grad_W
        void *grad_b_o
        void *grad_W_c
        void *grad_b_c
        unsigned char *touched
    Py_ssize_t bptt_online_work(Py_ssize_t H, Py_ssize_t O, Py_ssize_t C,
                                Py_ssize_t k2) noexcept nogil
    Py_ssize_t bptt_online_train_f(const bptt_online_args* args, bptt_online_pos* pos,
                                   const Py_ssize_t* inputs, const Py_ssize_t* targets,
                                   Py_ssize_t n_words, int last, double* loss) noexcept nogil
    Py_ssize_t bptt_online_train_d(const bptt_online_args* args, bptt_online_pos* pos,
                                   const Py_ssize_t* inputs, const Py_ssize_t* targets,
                                   Py_ssize_t n_words, int last, double* loss) noexcept nogil

ORDER_RNNLM = BPTT_ORDER_RNNLM
ORDER_BLOCK = BPTT_ORDER_BLOCK


def work_length(Py_ssize_t H, Py_ssize_t O, Py_ssize_t C, Py_ssize_t k2) -> int:
    """Length of train_chunk's scratch `work`."""
    return bptt_online_work(H, O, C, k2)


cdef inline void* _data(floating[::1] a) noexcept:
    """The first element's address of a flat buffer, NULL when it is empty."""
    return <void*>&a[0] if a.shape[0] > 0 else NULL


def train_chunk(floating[::1] V, floating[::1] U, floating[::1] b_h, floating[::1] W,
                floating[::1] b_o, floating[::1] W_c, floating[::1] b_c,
                const Py_ssize_t[::1] starts, const Py_ssize_t[::1] word_class,
                Py_ssize_t H, Py_ssize_t O, Py_ssize_t C, int act, int order,
                Py_ssize_t k1, Py_ssize_t k2, double lr, double beta, double error_clip,
                Py_ssize_t eos, floating[::1] h0, floating[::1] states,
                floating[::1] errors, Py_ssize_t[::1] ring_inputs, floating[::1] work,
                floating[::1] grad_W, floating[::1] grad_b_o, floating[::1] grad_W_c,
                floating[::1] grad_b_c, unsigned char[::1] touched,
                Py_ssize_t[::1] position, const Py_ssize_t[::1] inputs,
                const Py_ssize_t[::1] targets, bint last):
    """Train on inputs[i] -> targets[i] of one stream, continuing at `position` (step,
    since_reset, pending; updated in place). Every array is passed flat (C order):
    V (vocab*H), U (H*H), b_h (H), W (H*O), b_o (O), W_c (H*C), b_c (C) (C = 0: full
    softmax; W_c, b_c, starts, word_class empty), starts (C+1), word_class (O), h0 (H),
    states, errors ((k2+1)*H), ring_inputs (k2+1), work (work_length), and for
    ORDER_BLOCK grad_W (H*O), grad_b_o (O), grad_W_c (H*C), grad_b_c (C), touched
    (max(C, 1)), all zero between blocks (empty for ORDER_RNNLM).
    Returns (summed -ln P of the words done, words done): fewer words than given when a
    loss was not finite (the weights are then those before that word)."""
    cdef bptt_online_pos pos
    cdef bptt_online_args args
    cdef double loss = 0
    cdef Py_ssize_t done = 0, n = inputs.shape[0]
    pos.step, pos.since_reset, pos.pending = position[0], position[1], position[2]
    args.V, args.U, args.b_h = _data(V), _data(U), _data(b_h)
    args.W, args.b_o, args.W_c, args.b_c = _data(W), _data(b_o), _data(W_c), _data(b_c)
    args.starts = &starts[0] if C > 0 else NULL
    args.word_class = &word_class[0] if C > 0 else NULL
    args.H, args.O, args.C, args.act, args.order = H, O, C, act, order
    args.k1, args.k2, args.lr, args.beta, args.error_clip = k1, k2, lr, beta, error_clip
    args.eos, args.h0, args.states, args.errors = eos, _data(h0), _data(states), _data(errors)
    args.inputs, args.work = &ring_inputs[0], _data(work)
    args.grad_W, args.grad_b_o = _data(grad_W), _data(grad_b_o)
    args.grad_W_c, args.grad_b_c = _data(grad_W_c), _data(grad_b_c)
    args.touched = &touched[0] if touched.shape[0] > 0 else NULL
    if n > 0:
        with nogil:
            if floating is float:
                done = bptt_online_train_f(&args, &pos, &inputs[0], &targets[0], n, last,
                                           &loss)
            else:
                done = bptt_online_train_d(&args, &pos, &inputs[0], &targets[0], n, last,
                                           &loss)
    position[0], position[1], position[2] = pos.step, pos.since_reset, pos.pending
    return loss, done
