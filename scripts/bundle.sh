#!/usr/bin/env bash
# A relocatable release bundle: the switchyard binary with the Swift runtime
# linked in (--static-swift-stdlib) and every shared library it needs that a
# plain Linux host may lack (OpenBLAS, oneDNN, libnuma, hwloc, CBC and their
# dependencies), so it runs on a machine without Swift, e.g. a GPU host.
# glibc, libstdc++ and libgcc_s are the host's own. Usage:
#   scripts/bundle.sh [OUT_DIR]      (default dist/)
# Writes OUT_DIR/switchyard-<version>-linux-x86_64/ and a .tar.xz of it, then
# checks the unpacked bundle runs with no Swift library reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist}
VERSION=$(git describe --always --dirty 2>/dev/null || echo unknown)
NAME=switchyard-$VERSION-linux-x86_64
DIR=$OUT/$NAME
# A scratch path of its own, so .build/release (dynamic Swift runtime) stays as it is.
# Built from clean (about 7 minutes here): an incremental release build after a
# public type changed has left plug-in modules compiled against the old layout,
# and the binary crashed (the check below caught it). BUNDLE_INCREMENTAL=1
# reuses the last build.
[ "${BUNDLE_INCREMENTAL:-0}" = 1 ] || rm -rf .build/bundle
swift build -c release --static-swift-stdlib --scratch-path .build/bundle --product switchyard >&2
BIN=.build/bundle/release/switchyard
rm -rf "$DIR" && mkdir -p "$DIR/bin" "$DIR/lib"
cp "$BIN" "$DIR/bin/switchyard"
strip "$DIR/bin/switchyard"
# The host's C and C++ runtimes stay the host's; everything else ldd resolves is copied.
HOST_LIBS='^(linux-vdso|ld-linux|libc\.|libm\.|libmvec\.|libpthread\.|libdl\.|librt\.|libstdc\+\+\.|libgcc_s\.)'
copy_deps() {
  ldd "$1" | awk '$3 ~ /^\// {print $1, $3}' | while read -r name path; do
    if [[ ! $name =~ $HOST_LIBS ]] && [ ! -e "$DIR/lib/$name" ]; then cp -L "$path" "$DIR/lib/$name"; copy_deps "$path"; fi
  done
}
copy_deps "$DIR/bin/switchyard"
if ldd "$DIR/bin/switchyard" | grep -q 'libswift'; then echo "bundle: the binary still links a Swift shared library" >&2; exit 1; fi
# oneDNN is opened at run time (dlopen), so ldd does not list it.
DNNL=$(ldconfig -p | awk '/libdnnl\.so\.2 / {print $NF; exit}')
if [ -n "$DNNL" ]; then cp -L "$DNNL" "$DIR/lib/libdnnl.so.2"; copy_deps "$DIR/lib/libdnnl.so.2"; else echo "bundle: libdnnl.so.2 not installed; the bundle will run with --gemm openblas only" >&2; fi
strip --strip-unneeded "$DIR"/lib/*.so* 2>/dev/null || true
cat > "$DIR/switchyard" <<'SH'
#!/bin/sh
# Runs the bundled binary against the bundled libraries (dlopen of oneDNN
# included); CUDA libraries are looked up as switchyard topology describes.
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/switchyard" "$@"
SH
chmod +x "$DIR/switchyard"
cp README.md "$DIR/"
tar -C "$OUT" -cJf "$OUT/$NAME.tar.xz" "$NAME"
echo "bundle: $OUT/$NAME.tar.xz ($(du -h "$OUT/$NAME.tar.xz" | cut -f1); unpacked $(du -sh "$DIR" | cut -f1))"

# Check: unpack elsewhere and run with no Swift toolchain on the paths.
CHECK=$(mktemp -d)
tar -C "$CHECK" -xJf "$OUT/$NAME.tar.xz"
if env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH= ldd "$CHECK/$NAME/bin/switchyard" | grep -E 'not found|/opt/swift|libswift'; then
  echo "bundle: unresolved or Swift-toolchain libraries above" >&2; exit 1
fi
env -i PATH=/usr/bin:/bin HOME="$CHECK" "$CHECK/$NAME/switchyard" model create --arch qwen3_moe --preset tiny --out "$CHECK/tiny" --seed 0 >/dev/null
env -i PATH=/usr/bin:/bin HOME="$CHECK" "$CHECK/$NAME/switchyard" generate --model "$CHECK/tiny" --tokens 1,2,3 --max-tokens 4 --gemm onednn --dtype bfloat16 >/dev/null
# The hybrid path too, on the software CUDA device of the tests (where a C
# compiler is at hand): its greedy tokens must be the CPU's. A plug-in
# module left stale by an incremental build crashes here, not on a GPU host.
HYBRID=""
if command -v cc >/dev/null; then
  mkdir -p "$CHECK/sc"
  cc -O2 -shared -fPIC -o "$CHECK/sc/libsoftcuda.so" Tests/SoftwareCUDA/software_cuda.c -lm -ldl -lpthread
  for lib in libcuda.so.1 libcublas.so.13 libnvrtc.so.13; do ln -s libsoftcuda.so "$CHECK/sc/$lib"; done
  env -i PATH=/usr/bin:/bin HOME="$CHECK" "$CHECK/$NAME/switchyard" model create --arch qwen3_moe --preset tiny --dtype bf16 \
    --out "$CHECK/tiny-bf16" --seed 0 >/dev/null
  run() { env -i PATH=/usr/bin:/bin HOME="$CHECK" SWITCHYARD_CUDA_LIBRARY_PATH="$CHECK/sc" "$CHECK/$NAME/switchyard" generate \
            --model "$CHECK/tiny-bf16" --tokens 5,6,7,8,9,10,11,12 --max-tokens 8 --ignore-eos --dtype bfloat16 "$@" 2>/dev/null | head -1; }
  cpu=$(run --execution cpu)
  hybrid=$(run --execution hybrid --execution-config '{"gpu_memory": "4MiB"}')
  if [ -z "$cpu" ] || [ "$cpu" != "$hybrid" ]; then
    echo "bundle: --execution hybrid on the software CUDA device gave \"$hybrid\", --execution cpu \"$cpu\"" >&2
    exit 1
  fi
  HYBRID=" and --execution hybrid on the software CUDA device (greedy tokens equal to cpu's)"
fi
echo "bundle: checked (unpacked in $CHECK, ran model create and generate$HYBRID with no Swift toolchain reachable)"
rm -rf "$CHECK"
