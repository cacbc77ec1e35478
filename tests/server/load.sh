#!/usr/bin/env bash
# On-demand load + abuse run of `rotkv serve` (not part of `make test`):
#   1. 16 concurrent streaming clients (openai npm client) for 60 s: every
#      response complete, no error; afterwards no KV block reserved, every used
#      block is prefix cache; RSS sampled every 5 s must stay flat;
#   2. 1,000 malformed / oversized / abruptly closed requests: each answered
#      with the right status (or closed), the server stays up;
#   3. clean shutdown (exit 0; with an ASan build, no sanitizer report).
# usage: tests/server/load.sh [SECONDS=60] [CLIENTS=16] [ABUSE=1000]
#   env: ROTKV_BIN (default build/rotkv; build-asan/rotkv for ASan),
#        ROTKV_SHARED (default ../shared), SERVE_ARGS (default "-np 4 --kv-budget 1MiB"),
#        VALGRIND=1: the server runs under valgrind memcheck (any error or
#        definite leak fails the run; use a shorter run, e.g. 20 4 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}; CLIENTS=${2:-16}; ABUSE=${3:-1000}
BIN=${ROTKV_BIN:-build/rotkv}
MODEL=${ROTKV_SHARED:-../shared}/models/tinystories-656k-f32.gguf
SERVE_ARGS=${SERVE_ARGS:--np 4 --kv-budget 1MiB}
[ -x "$BIN" ] || { echo "no $BIN: run make first"; exit 2; }
[ -f "$MODEL" ] || { echo "no $MODEL (set ROTKV_SHARED)"; exit 2; }
(cd tests/server && { [ -d node_modules/openai ] || npm ci --no-audit --no-fund --silent; })
LOG=$(mktemp /tmp/rotkv-load-XXXXXX.log)
PREFIX=""
if [ "${VALGRIND:-0}" = 1 ]; then
    VGLOG=$(mktemp /tmp/rotkv-valgrind-XXXXXX.log)
    PREFIX="valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --log-file=$VGLOG"
fi
# shellcheck disable=SC2086
$PREFIX "$BIN" serve -m "$MODEL" --port 0 $SERVE_ARGS 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$LOG" | sed 's/.*://')
echo "server pid $PID on port $PORT ($BIN $SERVE_ARGS)"
rc=0
node tests/server/load.mjs "http://127.0.0.1:$PORT" "$CLIENTS" "$SECS" || rc=1
python3 tests/server/abuse.py 127.0.0.1 "$PORT" "$ABUSE" > /tmp/rotkv-abuse.json || rc=1
tail -1 /tmp/rotkv-abuse.json
python3 -c "import json,sys; d=json.loads(open('/tmp/rotkv-abuse.json').read().rsplit('\n',2)[0]); print('abuse: %d requests, %d unexpected, alive=%s' % (d['requests'], d['n_unexpected'], d['server_alive']))" || true
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^rotkv_(requests_total|kv_blocks|slots_active|queue_length|process_resident|generated_tokens_total|prompt_tokens)' || true
kill -TERM $PID
wait $PID || { echo "server exited with status $?"; rc=1; }
trap - EXIT
if [ -n "${VGLOG:-}" ]; then
    grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost" "$VGLOG" || true
    grep -q "ERROR SUMMARY: 0 errors" "$VGLOG" || { echo "valgrind errors in $VGLOG"; rc=1; }
fi
if grep -q "Sanitizer" "$LOG"; then echo "sanitizer report in $LOG"; grep -A5 Sanitizer "$LOG" | head -40; rc=1; fi
[ $rc = 0 ] && echo "LOAD+ABUSE PASSED" || echo "LOAD+ABUSE FAILED (server log: $LOG)"
exit $rc
