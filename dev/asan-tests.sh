#!/usr/bin/env bash
# Run the test suite once against an AddressSanitizer build of the kernels.
# Builds a copy of the source tree in a temporary folder (the working tree's own
# build is left alone), installs it into a fresh venv and runs pytest with the ASan
# runtime preloaded. Any invalid read or write in the extension aborts the run with
# an ASan report. Leak checking is off: CPython itself does not free everything at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$WORK/"
python3 -m venv "$WORK/venv"
BPTT_SANITIZE=address "$WORK/venv/bin/pip" install -q "$WORK[test]"
ASAN_LIB="$(gcc -print-file-name=libasan.so)"
cd "$WORK"
LD_PRELOAD="$ASAN_LIB" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONMALLOC=malloc \
    "$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
echo "AddressSanitizer: the test suite ran with no invalid access in the extension"
