#!/bin/sh
# pile-prep's command line on the real corpus: exit codes and messages, the
# same bytes whatever --threads is, --strict, truncated input, rerun of a
# finished job, refusal of other options, --force, splits by name and rule,
# zstd --long=31 and gzip input, other keys, unreadable and duplicate
# inputs, the default input.
#   prep_cli.sh PILE_PREP
# Speaks TAP; exits 77 when the corpus is absent.
set -u
. "$(dirname "$0")/tap.sh"
PREP=$1
case $PREP in /*) ;; *) PREP=$(pwd)/$PREP ;; esac
CORPUS=${PILE_SHARED:-../shared}/corpus
tap_skip_unless "the corpus is absent (set PILE_SHARED)" "$CORPUS/train/02.jsonl.zst"
tap_tmpdir prep-cli
has() { grep -q -- "$2" "$1"; }
# same_dir A B: same file names, every file byte-identical
same_dir() {
    [ "$(ls "$1")" = "$(ls "$2")" ] || { echo "# file lists differ: $(ls "$1" | tr '\n' ' ') / $(ls "$2" | tr '\n' ' ')"; return 1; }
    for f in $(ls "$1"); do cmp -s "$1/$f" "$2/$f" || { echo "# $f differs"; return 1; }; done
    return 0
}

cd "$TMP" || exit 1

# --- usage
"$PREP" --help >out 2>err; rc=$?
check "--help exits 0 and prints the usage" test $rc -eq 0 -a -s out
check "--help names every option" sh -c "grep -q -- --tokenizer out && grep -q -- --pack out && grep -q -- --strict out && grep -q -- --megatron out"
check "--help names the input options" sh -c "grep -q -- --text-key out && grep -q -- --subset-key out && grep -q -- --zstd-memory out && grep -q -- '--val PATTERN' out"
"$PREP" --version >out 2>err; rc=$?
check "--version" sh -c "test $rc -eq 0 && grep -q '^pile-prep [0-9]' out"
"$PREP" --no-such-option >out 2>err; rc=$?
check "an unknown option is a usage error (exit 2)" sh -c "test $rc -eq 2 && grep -q \"unknown option '--no-such-option'\" err"
"$PREP" --max-length abc "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "a bad number is a usage error (exit 2)" sh -c "test $rc -eq 2 && grep -q \"bad --max-length 'abc'\" err"
"$PREP" --pack zigzag "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "a bad --pack is a usage error (exit 2)" test $rc -eq 2
"$PREP" -o o-missing nope.jsonl.zst >out 2>err; rc=$?
check "a missing input: exit 1, named with strerror" sh -c \
    "test $rc -eq 1 && grep -qx \"pile-prep: cannot open 'nope.jsonl.zst': No such file or directory\" err"

"$PREP" -qZ "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "an unknown letter in a group of short options is named" sh -c "test $rc -eq 2 && grep -q \"unknown option '-Z'\" err"
"$PREP" -Zq "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "an unknown first letter of a group is named, not the word before it" sh -c \
    "test $rc -eq 2 && grep -q \"unknown option '-Z'\" err"
"$PREP" -o o-neg -L ' -18446744073709551615' "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "a negative number behind a blank is refused (strtoull would wrap it to 1)" sh -c \
    "test $rc -eq 2 && grep -q 'bad --max-length' err && test ! -e o-neg"
"$PREP" -o o-big --max-line-bytes 99999999999999999999 "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "an overflowing number is refused" sh -c "test $rc -eq 2 && grep -q 'bad --max-line-bytes' err"
"$PREP" "$CORPUS/val.jsonl.zst" -o >out 2>err; rc=$?
check "a missing value is a usage error" sh -c "test $rc -eq 2 && grep -q \"option '-o' needs a value\" err"
touch afile
"$PREP" -o afile/sub "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "an output folder that cannot be made: exit 1, named" sh -c "test $rc -eq 1 && grep -q \"cannot create folder 'afile\" err"
# A write error in the middle of a run (the file size limit, with SIGXFSZ
# ignored so that write() fails with EFBIG) stops every thread: exit 1 with
# the message, no hang, no temporary file left.
(trap '' XFSZ; ulimit -f 200 && exec "$PREP" -q -o wfail -j 3 -L 333 --shard-size 0.5 "$CORPUS/train/02.jsonl.zst") >out 2>err
rc=$?
check "a write error mid-run: exit 1, the message names the file" sh -c \
    "test $rc -eq 1 && grep -q \"cannot write 'wfail/train-00000.shard\" err && grep -q 'File too large' err"
check "a write error mid-run: no temporary file left" sh -c "test -f wfail/manifest.json && ! ls wfail | grep -q '\\.tmp\$'"

# --- threads: the same bytes (five inputs: with 8 threads three are read at
# once, more threads than this machine's cores)
IN="$CORPUS/train $CORPUS/val.jsonl.zst"
for pack in concat best-fit; do
    for j in 1 2 3 8; do
        "$PREP" -q -o "t-$pack-$j" -j $j -L 333 --shard-size 0.5 --pack $pack --window-rows 64 $IN 2>err-$j || echo "# rc $? $(cat err-$j)"
    done
    if test -f t-$pack-1/manifest.json && same_dir t-$pack-1 t-$pack-2 && same_dir t-$pack-1 t-$pack-3 &&
        same_dir t-$pack-1 t-$pack-8; then
        ok "$pack: --threads 1, 2, 3, 8 write the same bytes"
    else
        not_ok "$pack: --threads 1, 2, 3, 8 write the same bytes"
    fi
done
"$PREP" -o t-sum -j 8 -L 333 --shard-size 0.5 $IN >out 2>err; rc=$?
check "the summary names the busiest stage and its share of the wall time" sh -c "test $rc -eq 0 && \
    grep -Eq '^busiest stage: (read|parse\+tokenize|pack\+write), [0-9]+% of the wall time \(read [0-9]+% of [1-3] readers?, parse\+tokenize [0-9]+% of 8 workers, pack\+write [0-9]+% of 1\): ' err"
check "with 8 threads, several inputs are read at once" grep -Eq '\(([2-3]) inputs read at once at most' err
"$PREP" --progress -o t-prog -j 2 -L 333 --shard-size 0.5 $IN >out 2>err; rc=$?
check "the progress line names the busiest stage" sh -c \
    "test $rc -eq 0 && grep -Eq 'busiest: (read|parse\+tokenize|pack\+write) [0-9]+%' err"
nshards=$(ls t-concat-1 | grep -c '\.shard$')
check "small --shard-size gives many shards ($nshards)" test "$nshards" -ge 5

# --- summary
"$PREP" -o s1 -L 512 "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
docs=$(grep -m1 '^    "documents": ' s1/manifest.json | tr -dc 0-9)
check "summary: the reconciliation line" sh -c "test $rc -eq 0 && grep -q 'lines read $docs = documents $docs + skipped 0' err"
check "summary: per-subset counts, padding, speed" sh -c "grep -q 'padding' err && grep -q 'Github' err && grep -q 'MB/s' err"
"$PREP" -o s1 -L 512 "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "rerun of a finished job: says so, exit 0" sh -c "test $rc -eq 0 && grep -q 'already complete' err"
"$PREP" -o s1 -L 256 "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "rerun with other options: refused, suggests --force" sh -c "test $rc -eq 1 && grep -q -- '--force' err && grep -q max_length err"
"$PREP" -o s1 -L 512 "$CORPUS/val.jsonl.zst" "$CORPUS/tricky.jsonl" >out 2>err; rc=$?
check "rerun with other inputs: refused" sh -c "test $rc -eq 1 && grep -q 'inputs' err"
"$PREP" -q -o s1 -L 256 --force "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "--force starts over (and --quiet is quiet)" sh -c \
    "test $rc -eq 0 && test ! -s err && grep -q '\"max_length\": 256' s1/manifest.json"
mkdir stray && cp s1/val-00000.shard stray/
"$PREP" -o stray "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "shards without a manifest are not overwritten" sh -c "test $rc -eq 1 && grep -q 'no manifest.json' err"

# --- bad input
mkdir bad && cp "$CORPUS/bad.jsonl" bad/
"$PREP" --strict -o b1 bad/bad.jsonl >out 2>err; rc=$?
check "--strict: the first bad line is an error naming bad.jsonl:2" sh -c "test $rc -eq 1 && grep -q \"bad.jsonl:2'\" err"
"$PREP" -o b2 bad/bad.jsonl >out 2>err; rc=$?
check "bad lines: warnings name file:line, exit 0" sh -c "test $rc -eq 0 && grep -q \"warning: skipped 'bad/bad.jsonl:2': blank\" err"
check "bad lines: only the first 10 are reported" test "$(grep -c 'warning: skipped' err)" -eq 10
"$PREP" -o tr1 "$CORPUS/truncated.jsonl.zst" >out 2>err; rc=$?
check "a truncated .zst: warning, exit 0" sh -c "test $rc -eq 0 && grep -q 'truncated.jsonl.zst.* is truncated' err"
"$PREP" --strict -o tr2 "$CORPUS/truncated.jsonl.zst" >out 2>err; rc=$?
check "a truncated .zst with --strict: exit 1" test $rc -eq 1

# --- inputs as people have them: splits by name, other formats and keys (issues 14, 15)
mkdir sp && cp "$CORPUS/val.jsonl.zst" sp/pile_val.jsonl.zst && cp "$CORPUS/val.ascii.jsonl.zst" sp/pile_test.jsonl.zst &&
    cp "$CORPUS/train/02.jsonl.zst" sp/00.jsonl.zst
"$PREP" -o sp-out -L 512 sp >out 2>err; rc=$?
check "pile_val, pile_test and 00 .jsonl.zst give val, test and train shards" sh -c \
    "test $rc -eq 0 && test -f sp-out/val-00000.shard && test -f sp-out/test-00000.shard && test -f sp-out/train-00000.shard"
check "the summary names each split's files" sh -c \
    "grep -qx '  train: 1 file: sp/00.jsonl.zst' err && grep -qx '  val: 1 file: sp/pile_val.jsonl.zst' err &&
     grep -qx '  test: 1 file: sp/pile_test.jsonl.zst' err"
"$PREP" -o sp-rules -L 512 --val 'sp/00*' --train pile_val.jsonl.zst sp >out 2>err; rc=$?
check "--val and --train win over the names" sh -c \
    "test $rc -eq 0 && grep -qx '  val: 1 file: sp/00.jsonl.zst' err && grep -qx '  train: 1 file: sp/pile_val.jsonl.zst' err"
"$PREP" -o sp-two --val 'sp/00*' --test '*.zst' sp >out 2>err; rc=$?
check "a file named by two rules: exit 1, both named" sh -c \
    "test $rc -eq 1 && grep -qF \"'sp/00.jsonl.zst' is named by both --val 'sp/00*' and --test '*.zst'\" err && test ! -e sp-two"
"$PREP" -o sp-noval -L 512 sp/00.jsonl.zst >out 2>err; rc=$?
check "no validation file: the summary says so and what the trainer does instead" sh -c \
    "test $rc -eq 0 && grep -q '^  val: no file .*pile-trainer will hold out --val_fraction (1%) of train' err"
if command -v zstd >/dev/null; then
    zstd -dcq "$CORPUS/val.jsonl.zst" > long.jsonl
    mkdir long-a long-b
    zstd -q -c < long.jsonl > long-a/x.jsonl.zst
    zstd -q --long=31 -c < long.jsonl > long-b/x.jsonl.zst # streamed: the frame asks for a 2 GiB window
    "$PREP" -q -o long-out-a -L 300 long-a >out 2>&1
    "$PREP" -q -o long-out-b -L 300 --zstd-memory 2048 long-b >out 2>err; rc=$?
    check "a zstd --long=31 file gives the shards of the same text compressed normally" sh -c \
        "test $rc -eq 0 && cmp -s long-out-a/train-00000.shard long-out-b/train-00000.shard"
    "$PREP" -o long-out-c -L 300 --zstd-memory 64 long-b >out 2>err; rc=$?
    check "a frame over --zstd-memory: exit 1 before any shard, what it needs and the flag, never 'corrupt'" sh -c \
        "test $rc -eq 1 && grep -qF 'needs a 2048 MiB window (as zstd --long=31 writes), over the 64 MiB allowed; allow it with --zstd-memory 2048' err &&
         ! grep -qi corrupt err && test ! -e long-out-c/train-00000.shard"
    # files whose windows do not fit --zstd-memory together are read one at a time
    mkdir long-d
    for k in 1 2 3; do zstd -q --long=27 -c < long.jsonl > long-d/x$k.jsonl.zst; done # 128 MiB windows
    "$PREP" -o long-out-d -j 8 -L 300 --zstd-memory 128 long-d >out 2>err; rc=$?
    "$PREP" -q -o long-out-e -j 1 -L 300 --zstd-memory 128 long-d >out 2>&1
    if [ $rc -eq 0 ] && grep -q '(1 input read at once at most' err && same_dir long-out-d long-out-e; then
        ok "inputs whose zstd windows fill --zstd-memory together are read one at a time at 8 threads; the same bytes"
    else
        not_ok "inputs whose zstd windows fill --zstd-memory together are read one at a time at 8 threads; the same bytes"
    fi
    mkdir gz && gzip -c < long.jsonl > gz/x.jsonl.gz
    "$PREP" -q -o gz-out -L 300 gz >out 2>err; rc=$?
    check "a .jsonl.gz gives the same shards" sh -c "test $rc -eq 0 && cmp -s long-out-a/train-00000.shard gz-out/train-00000.shard"
else
    ok "zstd --long=31 # SKIP the zstd tool is absent"
fi
"$PREP" --zstd-memory 4096 "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "--zstd-memory says its range" sh -c "test $rc -eq 2 && grep -qF \"bad --zstd-memory '4096' (MiB, 1 to 2048)\" err"
"$PREP" -q -o j0 -j 0 -L 512 "$CORPUS/val.jsonl.zst" >out 2>err; rc0=$?
"$PREP" -q -o j1 -j 1 -L 512 "$CORPUS/val.jsonl.zst" >out 2>err; rc1=$?
check "-j 0 is all cores, the same bytes" sh -c "test $rc0 -eq 0 && test $rc1 -eq 0 && cmp -s j0/val-00000.shard j1/val-00000.shard"
"$PREP" -j 257 "$CORPUS/val.jsonl.zst" >out 2>err; rc=$?
check "a bad -j says the range" sh -c "test $rc -eq 2 && grep -qF \"bad --threads '257' (0 for all cores, or 1 to 256)\" err"
mkdir fifo && mkfifo fifo/stream.jsonl
"$PREP" -o fifo-out fifo >out 2>err; rc=$?
check "a FIFO named like an input: exit 1, named (and no hang)" sh -c \
    "test $rc -eq 1 && grep -qF \"cannot read 'fifo/stream.jsonl': a FIFO, not a regular file\" err"
mkdir dl && cp "$CORPUS/val.jsonl.zst" dl/a.jsonl.zst && ln -s /nonexistent/disk/b.jsonl.zst dl/b.jsonl.zst
"$PREP" -o dl-out dl >out 2>err; rc=$?
check "a dangling link named like an input: exit 1, named with its target" sh -c \
    "test $rc -eq 1 && grep -qF \"cannot open 'dl/b.jsonl.zst' (a symbolic link to '/nonexistent/disk/b.jsonl.zst'): No such file or directory\" err"
rm dl/b.jsonl.zst
"$PREP" -o dup-out -L 512 dl ./dl/ "$(pwd)/dl/a.jsonl.zst" >out 2>err; rc=$?
check "one file given three ways is read once, with a warning for each other spelling" sh -c \
    "test $rc -eq 0 && test \$(grep -c 'is the same file as .dl/a.jsonl.zst.: read once' err) -eq 2 &&
     grep -q '^inputs 1 ' err && test \$(grep -c '\"path\"' dup-out/manifest.json) -eq 1"
"$PREP" -o dup-out -L 512 ./dl/ >out 2>err; rc=$?
check "the same inputs spelled otherwise: the finished run is recognised" sh -c "test $rc -eq 0 && grep -q 'already complete' err"
"$PREP" -o dup-out -L 256 ./dl/ >out 2>err; rc=$?
check "other options on a finished run: refused, never called interrupted" sh -c \
    "test $rc -eq 1 && grep -q 'of the finished run there' err && ! grep -q interrupted err"
mkdir keys && printf '{"content": "first"}\n{"content": "second"}\n\n' > keys/a.jsonl
"$PREP" -o keys-out keys >out 2>err; rc=$?
check "every line skipped: exit 1 with the counts and the likely key" sh -c \
    "test $rc -eq 1 && grep -qF \"no documents: all 3 lines were skipped (blank 1, no_text 2); is the text under another member than 'text'? (--text-key)\" err"
"$PREP" -o keys-out2 --text-key content keys >out 2>err; rc=$?
check "--text-key content reads them, recorded in the manifest" sh -c \
    "test $rc -eq 0 && grep -q 'documents 2 + skipped 1' err && grep -q '\"text_key\": \"content\"' keys-out2/manifest.json"
printf '{\n  "pretty": true\n}\n' > keys/info.json
"$PREP" -o keys-out3 --text-key content keys >out 2>err; rc=$?
check "a walk passes over a pretty-printed .json with a note" sh -c \
    "test $rc -eq 0 && grep -qF \"pile-prep: note: passed over 'keys/info.json': one JSON document, not JSON lines\" err"

# --- default input: the bundled sample (only where /workspace/pile_data is absent)
if [ -d /workspace/pile_data ]; then
    ok "default input # SKIP /workspace/pile_data exists (too big for a test)"
elif [ ! -d "${PILE_SOURCE_ROOT:-.}/data/sample" ]; then
    ok "default input # SKIP data/sample is absent"
else
    "$PREP" -q -o def -L 2048 >out 2>err; rc=$?
    check "no input: the bundled data/sample is packed" sh -c \
        "test $rc -eq 0 && grep -q 'data/sample/' def/manifest.json && ls def | grep -q '^train-00000.shard$'"
fi

tap_done
