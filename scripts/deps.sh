#!/bin/sh
# scripts/deps.sh [build|test|arm64] — installs the Debian/Ubuntu packages rotkv needs.
#   build: what `make` needs (compiler, PCRE2, libmicrohttpd, cJSON, libcurl, OpenSSL)
#   test:  that plus what `make check` uses (cmocka, clang + its sanitizer runtime for
#          the fuzzer, python3 for the mock servers and jinja2 for the template test,
#          curl, gnuplot for kv-eval charts, node + npm for the OpenAI-client test)
#   arm64: what `make check-arm64` needs: the aarch64 cross compiler, qemu user-mode
#          emulation and the arm64 -dev packages of the build and the tests through
#          multiarch (adds the arm64 architecture to dpkg first)
# Nothing to do when everything is installed. As root it runs apt-get; otherwise it
# prints the exact command to run and exits with status 1 (nothing is changed).
set -eu
what=${1:-build}
build_pkgs="build-essential pkg-config libpcre2-dev libmicrohttpd-dev libcjson-dev libcurl4-openssl-dev libssl-dev"
test_pkgs="libcmocka-dev clang libclang-rt-14-dev python3 python3-jinja2 curl gnuplot-nox"
arm64_pkgs="build-essential pkg-config gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
            libpcre2-dev:arm64 libmicrohttpd-dev:arm64 libcjson-dev:arm64 libcurl4-openssl-dev:arm64
            libssl-dev:arm64 libcmocka-dev:arm64"
case "$what" in
build) pkgs=$build_pkgs ;;
test) pkgs="$build_pkgs $test_pkgs" ;;
arm64) pkgs=$arm64_pkgs ;;
*) echo "usage: scripts/deps.sh [build|test|arm64]" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "rotkv deps: not a Debian/Ubuntu system; install the equivalents of: $pkgs" >&2
    exit 0
fi
# clang's sanitizer runtime has a version in its name: use the installed clang's
if [ "$what" = test ]; then
    v=$(apt-cache policy clang 2>/dev/null | sed -n 's/ *Candidate: 1:\([0-9]*\).*/\1/p' | head -n1)
    [ -n "$v" ] && pkgs=$(echo "$pkgs" | sed "s/libclang-rt-14-dev/libclang-rt-$v-dev/")
fi
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node + npm: any installation will do (NodeSource's nodejs bundles npm and conflicts
# with Debian's npm package)
if [ "$what" = test ]; then
    command -v node >/dev/null 2>&1 || missing="$missing nodejs"
    command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi
[ -z "$missing" ] && exit 0

add_arch=""
if [ "$what" = arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    add_arch="sudo dpkg --add-architecture arm64 && sudo apt-get update && "
fi
if [ "$(id -u)" != 0 ]; then
    echo "rotkv deps: missing packages:$missing" >&2
    echo "install them with:" >&2
    echo "    ${add_arch}sudo apt-get install -y --no-install-recommends$missing" >&2
    echo "then run the command again." >&2
    exit 1
fi
echo "rotkv deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
[ -n "$add_arch" ] && dpkg --add-architecture arm64
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
