#!/usr/bin/env bash
# Run a command with torch's MKL on its Intel code path (tools/intel_mkl_path.c says why), e.g. on an AMD CPU with
# AVX-512, to reproduce bit for bit a result computed on an Intel Xeon with AVX-512:
#
#   tools/intel_mkl_path.sh python -m amnesiac_paper fidelity --profile full --seeds 0
#
# The provenance of every piece records MKL's path ("mkl_path"), so a result computed this way says so.
set -euo pipefail
if [[ $# -eq 0 ]]; then
    echo "usage: tools/intel_mkl_path.sh COMMAND [ARGS...]" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/amnesiac"
lib="$cache/libintel_mkl_path.so"
if [[ ! -f "$lib" || "$here/intel_mkl_path.c" -nt "$lib" ]]; then
    mkdir -p "$cache"
    "${CC:-cc}" -shared -fPIC -O2 -o "$lib.tmp" "$here/intel_mkl_path.c" || {
        echo "intel_mkl_path.sh: could not compile $here/intel_mkl_path.c; install a C compiler (apt install gcc) or set CC" >&2
        exit 2
    }
    mv "$lib.tmp" "$lib"
fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
