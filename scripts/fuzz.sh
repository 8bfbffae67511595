#!/usr/bin/env bash
# Fuzzes the shared crate for a bounded time: each cargo-fuzz target in fuzz/ (libFuzzer) runs
# SECONDS (default 60) from the committed seeds in fuzz/corpus/TARGET, with the dictionary
# fuzz/TARGET.dict. Inputs the fuzzer finds go to fuzz/corpus-scratch/TARGET (ignored by Git);
# the build stays in fuzz/target. A crash leaves its input in fuzz/artifacts/TARGET/ and makes the
# script fail; reproduce and minimise one with
#   cd fuzz && cargo +nightly fuzz run --sanitizer none TARGET artifacts/TARGET/crash-…
#   cd fuzz && cargo +nightly fuzz tmin --sanitizer none TARGET artifacts/TARGET/crash-…
# The code under test forbids unsafe code, so the fuzzer hunts panics (overflow checks and debug
# assertions are on) rather than memory errors: no AddressSanitizer, for a faster build and run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds="${1:-60}"
want="0.13.2"

if ! cargo fuzz --version 2>/dev/null | grep -q " $want\$"; then
  cargo install cargo-fuzz --locked --version "$want"
fi
# Nightly, as cargo-fuzz expects; without a sanitizer its flags are all stable ones, so stable
# builds the targets too where no nightly toolchain is installed.
toolchain=+nightly
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "note: no nightly toolchain, fuzzing with stable" >&2
  toolchain=+stable
fi

cd "$root/fuzz"
failed=()
for target in $(cargo "$toolchain" fuzz list); do
  scratch="corpus-scratch/$target"
  log="target/fuzz-$target.log"
  mkdir -p "$scratch" target
  dict=()
  if [[ -f "$target.dict" ]]; then
    dict=(-dict="$target.dict")
  fi
  echo "--- fuzz $target for ${seconds}s" >&2
  # The scratch corpus comes first: new inputs are written there, never among the seeds.
  set +e
  cargo "$toolchain" fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 "${dict[@]}" 2>&1 |
    tee "$log" |
    grep -E '^( *Finished|#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec))' >&2
  code=${PIPESTATUS[0]}
  set -e
  if ((code != 0)); then
    tail -n 40 "$log" >&2
    artifacts=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
    failed+=("$target: ${artifacts:-no crash input saved (a build failure? see fuzz/$log)}")
  fi
done

if ((${#failed[@]})); then
  echo "error: fuzzing failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzzing: no crash" >&2
