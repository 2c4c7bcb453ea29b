#!/bin/sh
# shards_fixture without the shared corpus: it must skip (exit 77) with a
# message, and free what it allocated (under ASan a leak report would turn
# the skip into exit 1, and the tests built on the fixture would fail
# instead of skipping).
#   shards_fixture_skip.sh SHARDS_FIXTURE
set -u
. "$(dirname "$0")/tap.sh"
FIXTURE=$1
tap_tmpdir fixture-skip
mkdir "$TMP/empty"
run env PILE_SHARED="$TMP/empty" "$FIXTURE" "$TMP/out-dir"
expect "without a corpus: exit 77, the reason on stdout" 77 "^1\.\.0 # SKIP no corpus .*$TMP/empty/corpus/sample.jsonl"
check "without a corpus: nothing written" test ! -e "$TMP/out-dir"
tap_done
