#!/usr/bin/env bash
# Build test/kafka/build/mockbroker (the librdkafka mock-cluster host).
# Idempotent: recompiles only when mockbroker.c or this script is newer than
# the binary. Quiet on success; compiler output and a non-zero exit on failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/mockbroker.c
out=$here/build/mockbroker

if [[ -x $out && $out -nt $src && $out -nt ${BASH_SOURCE[0]} ]]; then
	exit 0
fi

mkdir -p "$here/build"
if pkg-config --exists rdkafka 2>/dev/null; then
	read -r -a rdk_flags <<<"$(pkg-config --cflags --libs rdkafka)"
else
	rdk_flags=(-lrdkafka)
fi

# Compile to a temporary name and rename, so a concurrent caller never runs
# a half-written binary.
tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT
${CC:-cc} -std=c99 -O2 -g -Wall -Wextra -o "$tmp" "$src" "${rdk_flags[@]}"
mv -f "$tmp" "$out"
