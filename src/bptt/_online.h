/* Online training of a token language model on one stream (batch 1), word by word in C.

   The model is bptt's ElmanRNN with token inputs and a softmax over the next token, full
   or class-factorised (docs/math.md, "Class-factorised softmax"):

     net(t) = V[x(t)] + s(t-1) U + b_h,  s(t) = f(net(t))                    (eqs. 1-2)
     P(class c | s) = softmax(s W_c + b_c)_c,
     P(w | c, s)    = softmax over the words of c of s W[:, c's words] + b_o   (RNNLM)

   Row-vector convention: V (vocab, H), U (H, H), W (H, vocab), W_c (H, C); a class is the
   contiguous id range [starts[c], starts[c + 1]).

   Two update orders, both plain SGD with learning rate lr on the gradient dC/dtheta:
   - ORDER_RNNLM, the RNNLM toolkit's (Mikolov): after every word the output layer (the
     target class's columns of W, all of W_c) is updated, with the error
     dC/ds it sends to the hidden layer computed before that update and clipped to
     [-error_clip, error_clip]; every k1 words (and, with `eos` >= 0, at every target eos)
     the stored errors of the words since the last such step are back-propagated through
     the last k2 states (error clipped after each step back) and U and the rows of V of
     those states' inputs are updated. RNNLM's network has no biases: b_h, b_o, b_c stay
     as they are (zero in a fresh model). beta is RNNLM's weight decay: on every 10th word
     (counting from 1) each updated weight matrix row also loses lr * beta of itself, in V
     once per occurrence of a word in the window, as RNNLM does.
   - ORDER_BLOCK, bptt's TBPTT(k1, k2) (training.fit with k1, k2): every k1 words all
     gradients of the block (output layer included, computed with the block's starting
     weights) are applied at once; equal to the batched path at B = 1.
   With `eos` >= 0 the state restarts from h0 before every input eos, and the window
   never reaches back across such a restart (sentence-independent training).

   The stream may be processed in chunks: everything that carries over (the ring of the
   last k2 + 1 states, their inputs and errors, the step counter) lives in buffers owned
   by the caller (bptt.online), which validates every id and size before calling. */
#ifndef BPTT_ONLINE_H
#define BPTT_ONLINE_H

#include <math.h>
#include <string.h>
#include "_vecmath.h"

#define BPTT_ORDER_RNNLM 0
#define BPTT_ORDER_BLOCK 1

/* The arrays of a call, as the caller passes them: parameters (updated in place) and
   buffers, of the version's element type (float or double), NULL where absent. */
typedef struct {
    void *V, *U, *b_h, *W, *b_o, *W_c, *b_c;    /* V (vocab, H) ... W_c (H, C) */
    const Py_ssize_t *starts;                    /* (C + 1,) class bounds; NULL: full softmax */
    const Py_ssize_t *word_class;                /* (vocab,) each word's class; NULL likewise */
    Py_ssize_t H, O, C;                          /* hidden units, vocabulary, classes (0) */
    int act;                                     /* hidden activation, bptt.model's codes */
    int order;                                   /* BPTT_ORDER_RNNLM or BPTT_ORDER_BLOCK */
    Py_ssize_t k1, k2;                           /* BPTT every k1 words through k2 states */
    double lr, beta, error_clip;                 /* error_clip 0: no clipping */
    Py_ssize_t eos;                              /* >= 0: the state resets before input eos */
    const void *h0;                              /* (H,) the state a stream starts from */
    void *states, *errors;                       /* (k2 + 1, H) rings: states, errors dC/ds */
    Py_ssize_t *inputs;                          /* (k2 + 1,) ring: their input tokens */
    void *work;                                  /* scratch of bptt_online_work() */
    void *grad_W, *grad_b_o, *grad_W_c, *grad_b_c;   /* ORDER_BLOCK: output gradients */
    unsigned char *touched;                      /* ORDER_BLOCK: (max(C, 1),) classes */
    double *prof;                                /* NULL, or seconds per phase added */
} bptt_online_args;

/* --profile's phases of the online kernel, the indices into bptt_online_args.prof */
#define BPTT_ONLINE_HIDDEN 0      /* eqs. 1-2: the state of each word */
#define BPTT_ONLINE_OUTPUT 1      /* the softmax, its loss, errors and updates */
#define BPTT_ONLINE_BPTT 2        /* back-propagation through time and its updates */

/* Scratch length of a call: word scores z (O), class scores (C), the class layer's
   error (H), db_h (H), U^T (H * H), and for the window's k2 states their predecessors
   by unit and their deltas (k2 H each). */
static Py_ssize_t bptt_online_work(Py_ssize_t H, Py_ssize_t O, Py_ssize_t C, Py_ssize_t k2)
{
    return O + C + 2 * H + H * H + 2 * k2 * H;
}

#if defined(BPTT_L)
/* the sum of a vector's 16 lanes, halving the width at each step */
BPTT_INLINE float bptt_sum(bptt_vf v)
{
    typedef float half __attribute__((vector_size(4 * BPTT_L / 2)));
    typedef float quarter __attribute__((vector_size(4 * BPTT_L / 4)));
    half h0, h1;
    quarter q0, q1;
    memcpy(&h0, &v, sizeof h0);
    memcpy(&h1, (const char *)&v + sizeof h0, sizeof h1);
    h0 += h1;
    memcpy(&q0, &h0, sizeof q0);
    memcpy(&q1, (const char *)&h0 + sizeof q0, sizeof q1);
    q0 += q1;
    return (q0[0] + q0[2]) + (q0[1] + q0[3]);
}
#endif

/* Where the stream stands between chunks (all counts in words). */
typedef struct {
    Py_ssize_t step;         /* words processed since the stream started */
    Py_ssize_t since_reset;  /* words since the stream started or the state was reset */
    Py_ssize_t pending;      /* words whose output errors await back-propagation */
} bptt_online_pos;

/* The float32 and float64 versions are the same code: _online_impl.h is included once
   per type with R the element type and BPTT_SUFFIX(name) the name of the version. */
#define R float
#define BPTT_IS_FLOAT 1
#define BPTT_SUFFIX(name) name##_f
#include "_online_impl.h"
#undef R
#undef BPTT_IS_FLOAT
#undef BPTT_SUFFIX

#define R double
#define BPTT_IS_FLOAT 0
#define BPTT_SUFFIX(name) name##_d
#include "_online_impl.h"
#undef R
#undef BPTT_IS_FLOAT
#undef BPTT_SUFFIX

#endif  /* BPTT_ONLINE_H */
