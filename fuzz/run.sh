#!/usr/bin/env bash
# A short fuzzing pass: builds every target in fuzz/fuzz_targets and runs each in turn for
# N seconds (default 20; first argument or FUZZ_SECONDS), failing if any target finds a
# crash, a panic, a failed assertion or a hang. CI runs it; so can anyone, from a fresh clone.
#
# It runs on the machine's default toolchain, stable (CI has no other). `-s none` turns off the sanitizers,
# which are nightly-only, leaving cargo fuzz's coverage flags, which stable accepts; the
# targets are safe Rust, so a sanitizer would add little to the panics and failed
# assertions they report. RUSTC_BOOTSTRAP=1 lets stable accept any nightly-only flag a
# cargo-fuzz release may pass, so such a release does not break the pass. cargo-fuzz
# itself is installed from crates.io when missing.
#
# The first build compiles the server's and client's whole dependency tree with coverage
# instrumentation (about 10 CPU-minutes); later runs rebuild only what changed.
#
# Corpora grow in fuzz/corpus/<target>/ and findings land in fuzz/artifacts/<target>/ (both
# ignored by git); reproduce one with the command printed at the end of its run. A finding
# is fixed in the parser and kept as a regression test beside it.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-${FUZZ_SECONDS:-20}}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo fuzz build -s none
failed=()
for target in $(cargo fuzz list); do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "corpus/$target"
    args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    if [ -f "dicts/$target.dict" ]; then
        args+=(-dict="dicts/$target.dict")
    fi
    if ! cargo fuzz run -s none "$target" "corpus/$target" -- "${args[@]}"; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzing: no findings in ${seconds}s per target"
