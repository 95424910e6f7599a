"""bptt against the RNNLM toolkit 0.4b on Penn Treebank, side by side in one run.

Each round trains one epoch with RNNLM's settings (one stream, SGD alpha 0.1, sigmoid
hidden layer, 100 frequency classes, bptt 4, bptt-block 10, one thread) with the
RNNLM binary and with bptt (RNNLM's update order in bptt's online kernel), one after
the other, and prints training words/s and the validation perplexity after the epoch
for both. Rounds alternate the order of the two, so drifts of the machine fall on
both. RNNLM's words/s is its own figure (words over the process's CPU time, one
thread); bptt's is the epoch's training words over its wall time.

    python bench/rnnlm_side_by_side.py --rnnlm PATH/TO/rnnlm --data PTB_FOLDER \\
        [--hidden 100] [--rounds 3]

PTB_FOLDER holds ptb.train.txt and ptb.valid.txt (Mikolov's preprocessing). The RNNLM
binary is built from its public 0.4b source (g++ -O3 -march=native -funroll-loops
-ffast-math, float weights) and is not part of bptt.
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import tempfile

from bptt import lm, threads
from bptt.text import Vocabulary


def rnnlm_epoch(binary: str, train: str, valid: str, hidden: int, folder: str):
    """(words/s, validation PPL) of one RNNLM epoch."""
    model = os.path.join(folder, "rnnlm.bin")
    for stale in (model, model + ".output.txt"):
        if os.path.exists(stale):
            os.remove(stale)
    out = subprocess.run(
        [binary, "-rnnlm", model, "-train", train, "-valid", valid, "-hidden", str(hidden),
         "-class", "100", "-bptt", "4", "-bptt-block", "10", "-rand-seed", "1",
         "-debug", "2", "-max-iter", "1", "-direct", "0", "-binary"],
        capture_output=True, text=True, check=True).stdout
    last = out.replace("\r", "\n").strip().splitlines()[-1]
    words = float(re.search(r"Words/sec: ([0-9.]+)", last).group(1))
    entropy = float(re.search(r"VALID entropy: ([0-9.]+)", last).group(1))
    return words, 2.0 ** entropy


def bptt_epoch(vocab: Vocabulary, train_ids, valid_ids, hidden: int):
    """(words/s, validation PPL) of one bptt epoch with RNNLM's settings."""
    net = lm.build(vocab, hidden, 100, seed=1)
    k1, k2 = lm.rnnlm_window(4, 10)
    history = lm.train(net, vocab, train_ids, valid_ids, k1=k1, k2=k2, lr=0.1, epochs=1,
                       l2=1e-7, error_clip=15.0, schedule=None)
    return history.steps_per_second[0], math.exp(history.valid_loss[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rnnlm", required=True, help="the RNNLM 0.4b binary")
    parser.add_argument("--data", required=True, help="folder with ptb.train/valid.txt")
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    train = os.path.join(args.data, "ptb.train.txt")
    valid = os.path.join(args.data, "ptb.valid.txt")
    threads.set_num_threads(1)
    vocab = Vocabulary.from_file(train)
    train_ids = vocab.encode_file(train)
    valid_ids = vocab.encode_file(valid)
    results = {"rnnlm": [], "bptt": []}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            order = ("rnnlm", "bptt") if r % 2 == 0 else ("bptt", "rnnlm")
            for name in order:
                if name == "rnnlm":
                    results[name].append(rnnlm_epoch(args.rnnlm, train, valid, args.hidden,
                                                     folder))
                else:
                    results[name].append(bptt_epoch(vocab, train_ids, valid_ids,
                                                    args.hidden))
                words, ppl = results[name][-1]
                print(f"round {r + 1} {name:5s}: {words:10,.0f} words/s  valid PPL {ppl:.1f}",
                      flush=True)
    ratios = [b[0] / r[0] for b, r in zip(results["bptt"], results["rnnlm"])]
    print(f"\nhidden {args.hidden}, {args.rounds} rounds, one thread:")
    print("| | training words/s (median, range) | validation PPL after epoch 1 |")
    print("|---|---|---|")
    for name in ("rnnlm", "bptt"):
        words = [w for w, _ in results[name]]
        ppl = results[name][0][1]
        print(f"| {name} | {statistics.median(words):,.0f} ({min(words):,.0f}-"
              f"{max(words):,.0f}) | {ppl:.1f} |")
    print(f"bptt / RNNLM words/s per round: "
          + ", ".join(f"{x:.2f}" for x in ratios)
          + f" (median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
