#!/usr/bin/env bash
# Fills .carry/ (git-ignored) with the Debian 12 build and test dependencies that the GPU machine
# may lack, so scripts/gpu.sh can build ftune there without a network: the -dev packages'
# headers, CMake/pkg-config files and libraries plus their runtime library packages, fetched
# with `apt-get download` and unpacked with `dpkg-deb -x` into .carry/root (a relocatable /usr
# tree). Debian 12 binaries run on the GPU machine's Ubuntu 24.04 (newer glibc/libstdc++).
#
#   scripts/make_carry.sh              download, unpack, prune, check size (run here, Debian 12)
#   scripts/make_carry.sh --extract    only unpack .carry/debs/*.deb (kept with KEEP_DEBS=1)
#
# Layout:
#   .carry/root/usr/...   the unpacked packages (pkg-config files rewritten to ${pcfiledir})
#   .carry/fallback/lib   libgfortran5/libquadmath0 (OpenBLAS's runtime deps), used by gpu.sh
#                         only where the system has none, so they never shadow newer copies
#   .carry/MANIFEST.txt   package versions, what was pruned, total size
# Size: ~45 MB, nearly all of it libopenblas (36 MB); the budget is 50 MB (checked below).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.carry
ROOT=$CARRY/root
LIMIT_MB=${CARRY_LIMIT_MB:-50}

# Build dependencies (CMakeLists.txt, tests/CMakeLists.txt) and the runtime packages behind them.
DEV_PKGS=(libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
          libopenblas-dev libopenblas-openmp-dev libpcre2-dev libgtest-dev libgmock-dev
          libgloo-dev)
RUNTIME_PKGS=(libyaml-cpp0.7 libfmt9 libspdlog1.10 libopenblas0 libopenblas0-openmp
              libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libgfortran5 libquadmath0
              libgloo0 libhiredis0.14 libibverbs1 libnl-3-200 libnl-route-3-200)
# CMake's FindPkgConfig is REQUIRED; pkgconf is tiny and gpu.sh uses it only if none is installed.
TOOL_PKGS=(pkgconf pkgconf-bin libpkgconf3)
# Dependencies deliberately not carried: the base system (every Linux has them), alternatives
# (ftune links the OpenMP flavour of OpenBLAS, see CMakeLists.txt), sources and test-only packages of other projects.
NOT_NEEDED=(libc6 libgcc-s1 libstdc++6 libgomp1 gcc-12-base "<libc-dev>" libc6-dev
            libopenblas-pthread-dev libopenblas-serial-dev libopenblas0-pthread libopenblas0-serial
            googletest catch2
            # libgloo-dev's own -dev dependencies: ftune includes neither the Redis store nor
            # the ibverbs transport headers; adduser is a maintainer-script dependency.
            libhiredis-dev libibverbs-dev adduser)

ALL_PKGS=("${DEV_PKGS[@]}" "${RUNTIME_PKGS[@]}" "${TOOL_PKGS[@]}")

in_list() {  # in_list WORD LIST...
  local w=$1; shift
  for x in "$@"; do [ "$x" = "$w" ] && return 0; done
  return 1
}

# Unpacks every .deb of $1 into $ROOT and makes the tree relocatable and small.
extract() {
  local debs=$1
  rm -rf "$ROOT" "$CARRY/fallback"
  mkdir -p "$ROOT" "$CARRY/fallback/lib"
  local n=0
  for deb in "$debs"/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$ROOT"
    else  # a .deb is an ar archive holding data.tar.*
      local tmp deb_abs root_abs
      tmp=$(mktemp -d); deb_abs=$(realpath "$deb"); root_abs=$(realpath "$ROOT")
      (cd "$tmp" && ar x "$deb_abs" && tar -xf data.tar.* -C "$root_abs")
      rm -rf "$tmp"
    fi
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "make_carry: no .deb files in $debs" >&2; exit 1; }

  local lib=$ROOT/usr/lib/x86_64-linux-gnu
  # Pruned: documentation, static libraries other than GoogleTest's (the build links the shared
  # ones), OpenBLAS's LAPACK/reference-BLAS copies (ftune calls cblas_sgemm only), sources.
  rm -rf "$ROOT/usr/share/doc" "$ROOT/usr/share/man" "$ROOT/usr/share/lintian" "$ROOT/usr/src"
  find "$ROOT" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' -delete
  rm -f "$lib/openblas-openmp/liblapack.so.3" "$lib/openblas-openmp/libblas.so.3"
  find "$ROOT" -xtype l -delete  # links left dangling by the pruning
  # What update-alternatives would have made: libopenblas.so{,.0} in the main library folder.
  ln -sf openblas-openmp/libopenblas.so "$lib/libopenblas.so"
  ln -sf openblas-openmp/libopenblas.so.0 "$lib/libopenblas.so.0"
  # OpenBLAS's Fortran runtime goes aside (gpu.sh adds it only where the system lacks it).
  mv "$lib"/libgfortran.so.5* "$lib"/libquadmath.so.0* "$CARRY/fallback/lib/"
  # pkg-config files: absolute /usr paths become ${pcfiledir}-relative, so the tree works
  # wherever the checkout lives. (The CMake package files are relocatable already.)
  python3 - "$ROOT" <<'PY'
import os, re, sys
root = os.path.abspath(sys.argv[1])
usr = os.path.join(root, "usr")
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".pc"):
            continue
        p = os.path.join(dirpath, f)
        rel = os.path.relpath(usr, dirpath)
        text = open(p).read()
        # /usr at the start of a value or after -I/-L (prefix=/usr, Cflags: -I/usr/include).
        new = re.sub(r"(^|[=\s]|-I|-L)/usr(?=/|\s|$)", lambda m: m.group(1) + "${pcfiledir}/" + rel,
                     text, flags=re.M)
        if new != text:
            open(p, "w").write(new)
PY
}

size_mb() { du -sm "$1" | cut -f1; }

if [ "${1:-}" = "--extract" ]; then
  extract "$CARRY/debs"
  echo "make_carry: unpacked $CARRY/debs into $ROOT ($(size_mb "$CARRY") MB)"
  exit 0
fi

command -v apt-get >/dev/null || { echo "make_carry: needs apt-get (run on Debian 12)" >&2; exit 1; }
. /etc/os-release
if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
  echo "make_carry: warning: this is $PRETTY_NAME, the carried set is made for Debian 12" >&2
fi

# Report every dependency that is neither carried nor known to be unnecessary.
missing=()
for p in "${ALL_PKGS[@]}"; do
  while read -r dep; do
    in_list "$dep" "${ALL_PKGS[@]}" || in_list "$dep" "${NOT_NEEDED[@]}" || missing+=("$dep (of $p)")
  done < <(apt-cache depends "$p" | sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: //p')
done
if [ "${#missing[@]}" -gt 0 ]; then
  printf 'make_carry: dependency not carried and not known to be unnecessary: %s\n' "${missing[@]}" >&2
  exit 1
fi

DEBS=$(mktemp -d)
trap 'rm -rf "$DEBS"' EXIT
chmod 755 "$DEBS"  # apt's sandbox user (_apt) writes the downloads
(cd "$DEBS" && apt-get download -q "${ALL_PKGS[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
got=$(ls "$DEBS"/*.deb 2>/dev/null | wc -l)
if [ "$got" -ne "${#ALL_PKGS[@]}" ]; then
  echo "make_carry: downloaded $got of ${#ALL_PKGS[@]} packages (apt-get update first?)" >&2
  exit 1
fi
rm -rf "$CARRY"
mkdir -p "$CARRY"
extract "$DEBS"
if [ "${KEEP_DEBS:-0}" = "1" ]; then
  mkdir -p "$CARRY/debs" && cp "$DEBS"/*.deb "$CARRY/debs/"
fi

{
  echo "# .carry: made by scripts/make_carry.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) ($PRETTY_NAME)"
  for deb in "$DEBS"/*.deb; do
    dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb"
  done
  echo "# pruned: docs, man pages, static libs except libgtest*/libgmock*, OpenBLAS liblapack/libblas"
  echo "# size: $(size_mb "$CARRY") MB"
} >"$CARRY/MANIFEST.txt"

total=$(size_mb "$CARRY")
echo "make_carry: $CARRY holds ${#ALL_PKGS[@]} packages, $total MB (limit $LIMIT_MB MB)"
if [ "$total" -gt "$LIMIT_MB" ]; then
  echo "make_carry: $CARRY is over the $LIMIT_MB MB budget" >&2
  exit 1
fi
