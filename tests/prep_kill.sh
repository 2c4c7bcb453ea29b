#!/bin/sh
# Crash safety of pile-prep: kill -9 it at many moments (after the 1st, 3rd,
# ... shard, at random times, in the final phase, and again while it
# resumes), rerun the same command, and compare every output file with an
# uninterrupted run: they must be byte-identical. Concat and best-fit; the
# killed runs use 1, 3 or 8 threads (8: three inputs read at once), the
# resumed ones another count.
#   prep_kill.sh PILE_PREP
# Speaks TAP; exits 77 when the corpus is absent.
set -u
. "$(dirname "$0")/tap.sh"
PREP=$1
case $PREP in /*) ;; *) PREP=$(pwd)/$PREP ;; esac
SHARED=${PILE_SHARED:-../shared}
CORPUS=$SHARED/corpus
tap_skip_unless "the corpus is absent (set PILE_SHARED)" "$CORPUS/train/00.jsonl.zst"
tap_tmpdir prep-kill
# the same files, byte for byte, into the tokenizer's copy in tokenizer/
same_dir() {
    [ "$(ls "$1")" = "$(ls "$2")" ] || { echo "# file lists differ: [$(ls "$1" | tr '\n' ' ')] [$(ls "$2" | tr '\n' ' ')]"; return 1; }
    for f in $(ls "$1"); do
        if [ -d "$1/$f" ]; then same_dir "$1/$f" "$2/$f" || return 1
        else cmp -s "$1/$f" "$2/$f" || { echo "# $f differs"; return 1; }; fi
    done
}
nshards() { ls "$1" 2>/dev/null | grep -c '\.shard$'; }
rand() { awk -v s="$1" -v m="$2" 'BEGIN { srand(s); printf "%.3f", rand() * m }'; }

# The GPT-2 tokenizer makes a run slow enough to be hit at many moments.
TOK=""
[ -f "$SHARED/fixtures/gpt2/encoder.json" ] && TOK="--tokenizer $SHARED/fixtures/gpt2"
IN="$CORPUS/train $CORPUS/val.jsonl.zst"

# start OUT: runs pile-prep in the background, with $J threads
J=1
start() { "$PREP" -q -j $J -o "$1" -L 256 --shard-size 0.25 --pack "$PACK" --window-rows 64 --megatron $TOK $IN 2>>"$TMP/log" & pid=$!; }
# kill_after_shards OUT K: kill -9 once OUT holds K shards (or the run ended)
kill_after_shards() {
    while kill -0 $pid 2>/dev/null && [ "$(nshards "$1")" -lt "$2" ]; do sleep 0.005; done
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
}
kill_after_file() {
    while kill -0 $pid 2>/dev/null && [ ! -e "$1" ]; do sleep 0.002; done
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
}
kill_after_time() { sleep "$1"; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; }
finish() { "$PREP" -q -j $FJ -o "$1" -L 256 --shard-size 0.25 --pack "$PACK" --window-rows 64 --megatron $TOK $IN 2>>"$TMP/log"; }

for PACK in concat best-fit; do
    ref="$TMP/ref-$PACK"
    J=1
    start "$ref"; wait $pid
    total=$(nshards "$ref")
    if [ "$total" -lt 8 ]; then
        not_ok "$PACK: the reference run writes many shards ($total)"
        continue
    fi
    case_no=0
    for k in 1 3 $((total / 2)) $((total - 2)) t1 t2 final twice; do
        case_no=$((case_no + 1))
        out="$TMP/$PACK-$case_no"
        case $((case_no % 3)) in 0) J=8 FJ=3 ;; 1) J=1 FJ=8 ;; *) J=3 FJ=2 ;; esac
        start "$out"
        case $k in
            final) what="in the final phase (after the last shard)"; kill_after_file "$out/val-00000.shard" ;;
            twice) what="after shard 2, then again while resuming"
                   kill_after_shards "$out" 2
                   start "$out"; kill_after_shards "$out" $((total / 2)) ;;
            t*) what="at a random time ($(rand $case_no 1.5) s)"; kill_after_time "$(rand $case_no 1.5)" ;;
            *) what="after shard $k"; kill_after_shards "$out" "$k" ;;
        esac
        finish "$out"
        rc=$?
        if [ $rc -eq 0 ] && same_dir "$ref" "$out"; then
            ok "$PACK: killed $what (-j $J), resumed (-j $FJ): identical output"
        else
            not_ok "$PACK: killed $what (-j $J), resumed (-j $FJ): identical output (rc $rc)"
        fi
        rm -rf "$out"
    done
done
if [ $failed -ne 0 ] && [ -s "$TMP/log" ]; then sed 's/^/# /' "$TMP/log" | tail -20; fi
tap_done
