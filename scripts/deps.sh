#!/bin/sh
# scripts/deps.sh [build|test] — installs the Debian/Ubuntu packages rotkv needs.
#   build: what `make` needs (compiler, PCRE2, libmicrohttpd, cJSON, libcurl, OpenSSL)
#   test:  that plus what `make check` uses (cmocka, clang + its sanitizer runtime for
#          the fuzzer, python3 for the mock servers and jinja2 for the template test,
#          curl, gnuplot for kv-eval charts, node + npm for the OpenAI-client test)
# Nothing to do when everything is installed. As root it runs apt-get; otherwise it
# prints the exact command to run and exits with status 1 (nothing is changed).
set -eu
what=${1:-build}
build_pkgs="build-essential pkg-config libpcre2-dev libmicrohttpd-dev libcjson-dev libcurl4-openssl-dev libssl-dev"
test_pkgs="libcmocka-dev clang libclang-rt-14-dev python3 python3-jinja2 curl gnuplot-nox"
case "$what" in
build) pkgs=$build_pkgs ;;
test) pkgs="$build_pkgs $test_pkgs" ;;
*) echo "usage: scripts/deps.sh [build|test]" >&2; exit 2 ;;
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

if [ "$(id -u)" != 0 ]; then
    echo "rotkv deps: missing packages:$missing" >&2
    echo "install them with:" >&2
    echo "    sudo apt-get install -y --no-install-recommends$missing" >&2
    echo "then run the command again." >&2
    exit 1
fi
echo "rotkv deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
