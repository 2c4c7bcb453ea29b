#!/bin/sh
# pile-prep's output folder, through the real tools on the real corpus:
#  - it is self-contained: a tokenizer trained with pile-tok and given by a
#    relative path is copied into it; the trainer started from another
#    folder, and the folder copied elsewhere with the original tokenizer
#    deleted, trains, checkpoints and decodes (pile-dump --decode, sample);
#    an older manifest (the spec as typed) is looked up beside it, checked
#    by fingerprint, and refused clearly when absent;
#  - one writer: a second run on a folder in use refuses at once naming the
#    holder; after kill -9 of the first a new run resumes without cleanup;
#  - a user's files (thesis.tmp, dir.tmp/, train.bin, photo.jpg) survive
#    every run, --force and --megatron, and one in the way is refused;
#  - bad subset names (empty, NUL, 70,000 bytes, control characters, more
#    than 65,536 in one shard) are fixed and counted, the run finishes, and
#    pile-dump shows them escaped;
#  - a resumed or finished run re-reads its kept shards and Megatron files
#    and writes damaged or missing ones again, byte-identical;
#  - many tiny shards (the manifest is not rewritten after each) resume
#    exactly after kill -9; pile-dump --decode N --shard F PATH and
#    --window-rows out of range are refused with the reason.
#   prep_output_cli.sh PILE_PREP PILE_DUMP PILE_TOK PILE_TRAINER PYTHON3
# Speaks TAP; exits 77 when the corpus is absent.
set -u
. "$(dirname "$0")/tap.sh"
PREP=$(abs "$1")
DUMP=$(abs "$2")
TOK=$(abs "$3")
TR=$(abs "$4")
PY=$5
SHARED=$(abs "${PILE_SHARED:-../shared}")
C=$SHARED/corpus
GPT2=$SHARED/fixtures/gpt2
tap_skip_unless "the corpus is absent (set PILE_SHARED)" "$C/val.jsonl.zst" "$C/train/00.jsonl.zst"
tap_tmpdir prep-output
cd "$TMP" || exit 1

# same_dir A B: the same files, recursively, byte for byte (not the lock file, which records its
# holder, nor the user's thesis.tmp)
same_dir() {
    diff -r -q -x .pile.lock -x thesis.tmp "$1" "$2" > "$TMP/diff" 2>&1 || { sed 's/^/# /' "$TMP/diff" | head -5; return 1; }
}
# flip OFFSET FILE: xor one byte
flip() { "$PY" -c "
import sys
p, o = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, 'rb').read()); b[o] ^= 0x5a; open(p, 'wb').write(b)" "$2" "$1"; }
nshards() { ls "$1" 2> /dev/null | grep -c '\.shard$'; }
# wait_shards DIR K PID: until DIR holds K shards or PID has ended (60 s at most)
wait_shards() {
    i=0
    while [ "$(nshards "$1")" -lt "$2" ] && [ $i -lt 1200 ] && kill -0 "$3" 2> /dev/null; do sleep 0.05; i=$((i + 1)); done
}
# the text of the first document of a .jsonl.zst, its first 60 characters up to a newline
first_text() { "$PY" -c '
import json, subprocess, sys
line = subprocess.run(["zstd", "-dc", sys.argv[1]], check=True, capture_output=True).stdout.split(b"\n")[0]
print(json.loads(line)["text"][:60].split("\n")[0])' "$1"; }

# ================================================= a self-contained folder
mkdir -p w/in t1 t2
cp "$C/val.jsonl.zst" w/in/part.jsonl.zst
(cd w && "$TOK" train --vocab-size 300 -o tok.json in/part.jsonl.zst > out 2>&1 &&
    "$PREP" -q -o shards -L 64 -t tok.json in) > out 2> err
check "pile-tok train, then pile-prep -t tok.json (relative)" test $? -eq 0 -a -f w/shards/manifest.json
check "the tokenizer is copied into the folder: shards/tokenizer/tok.json, the same bytes" cmp -s w/tok.json w/shards/tokenizer/tok.json
check "the manifest records the copy, relative to its folder, and the source as given" \
    "$PY" -c "
import json, sys
m = json.load(open('w/shards/manifest.json'))
assert m['options']['tokenizer'] == 'tokenizer/tok.json', m['options']
assert m['tokenizer_copy']['source'] == 'tok.json', m['tokenizer_copy']
assert [f['file'] for f in m['tokenizer_copy']['files']] == ['tokenizer/tok.json']"
TRAIN="--model tiny --max_steps 2 --save_interval 2 --batch_size 4 --threads 1 --eval_rows 16 --seed 1"
(cd t1 && "$TR" --data ../w/shards $TRAIN --checkpoint_dir ck) > out 2> err
st=$?
check "the trainer started from another folder trains and checkpoints (status $st)" test $st -eq 0 -a -f t1/ck/step-0000002/model.safetensors
check "... and its checkpoint holds the tokenizer" cmp -s w/tok.json t1/ck/step-0000002/tokenizer/tok.json

# the folder copied to "another machine", the original tokenizer deleted
cp -r w/shards moved
rm -rf w
(cd t2 && "$TR" --data ../moved $TRAIN --checkpoint_dir ck) > out 2> err
st=$?
check "the copied folder, original tokenizer deleted: trains and checkpoints (status $st)" \
    test $st -eq 0 -a -f t2/ck/step-0000002/model.safetensors -a -f t2/ck/step-0000002/tokenizer/tok.json
want=$(first_text "$C/val.jsonl.zst")
(cd t2 && "$DUMP" --decode 0 ../moved) > out 2> err
if [ $? -eq 0 ] && grep -qF -- "$want" out; then ok "pile-dump --decode 0 on the copy decodes the first document"; else fail "pile-dump --decode 0 on the copy"; fi
(cd t2 && "$TR" sample --checkpoint ck/step-0000002 --prompt "In the" --max_new_tokens 8 --seed 1 --threads 1) > out 2> err
if [ $? -eq 0 ] && grep -q "^In the" out; then ok "pile-trainer sample decodes with the checkpoint's tokenizer"; else fail "sample"; fi
"$DUMP" --verify moved > out 2> err
check "pile-dump --verify accepts the copy" test $? -eq 0

# a manifest of an older pile-prep: the spec as typed ("tok.json"), no copy
cp -r moved old
rm -r old/tokenizer
"$PY" -c "
import json
m = json.load(open('old/manifest.json')); m['options']['tokenizer'] = 'tok.json'; del m['tokenizer_copy']
json.dump(m, open('old/manifest.json', 'w'), indent=2)"
cp moved/tokenizer/tok.json old/tok.json
run "$DUMP" --decode 0 old
if [ $st -eq 0 ] && grep -qF -- "$want" "$TMP/out"; then ok "an older manifest: its relative spec is found beside it"; else fail "older manifest, spec beside it"; fi
mv old/tok.json tok.json
run "$DUMP" --decode 0 old
if [ $st -eq 0 ] && grep -qF -- "$want" "$TMP/out"; then ok "... then from the current folder (as typed), its fingerprint checked"; else fail "older manifest, spec from here"; fi
"$TOK" train --vocab-size 290 -o tok.json "$C/val.jsonl.zst" > /dev/null 2>&1
run "$DUMP" --decode 0 old
expect "... a look-alike of another fingerprint is refused, named" 1 "has fingerprint [0-9a-f]+, the data's is"
rm tok.json
run "$DUMP" --decode 0 old
expect "... absent: pile-dump refuses, naming both places and --tokenizer" 1 "neither '.*old/tok.json' \(beside the record\) nor 'tok.json'.*--tokenizer"
run "$TR" --data old $TRAIN --checkpoint_dir ck-old
expect "... absent: the trainer refuses before step 1, naming it and --tokenizer" 1 "cannot find the recorded tokenizer 'tok.json'.*pass --tokenizer"
check "... and wrote no checkpoint" test ! -e ck-old/latest
run "$TR" --data old $TRAIN --checkpoint_dir ck-old --tokenizer moved/tokenizer/tok.json
expect "... --tokenizer given: it trains" 0 "trained 2 of 2 steps"

# ====================================================== a user's files
mkdir u
echo draft > u/thesis.tmp; mkdir u/dir.tmp; echo user > u/train.bin; echo jpeg > u/photo.jpg
users_ok() { [ "$(cat "$1/thesis.tmp")" = draft ] && [ -d "$1/dir.tmp" ] && [ "$(cat "$1/train.bin")" = user ] && [ "$(cat "$1/photo.jpg")" = jpeg ]; }
run "$PREP" -q -o u "$C/val.jsonl.zst"
check "a run in a folder holding a user's files: exit 0 ($st)" test $st -eq 0 -a -f u/val-00000.shard
check "... thesis.tmp, dir.tmp/, train.bin and photo.jpg survive" users_ok u
run "$PREP" -q -o u "$C/val.jsonl.zst"
check "... and a rerun" users_ok u
run "$PREP" -q --force -o u -L 512 "$C/val.jsonl.zst"
check "... and --force (exit $st)" sh -c "test $st -eq 0 && grep -q '\"max_length\": 512' u/manifest.json"
check "... they survive --force" users_ok u
mkdir um && echo user > um/train.bin
run "$PREP" -o um --megatron "$C/val.jsonl.zst"
expect "--megatron where a user's train.bin is: refused, naming it" 1 "'um/train.bin' is in the way"
check "... and kept" grep -qx user um/train.bin
run "$PREP" -o u --force --megatron "$C/val.jsonl.zst"
expect "--force --megatron: refused too" 1 "'u/train.bin' is in the way"
check "... before anything was removed" sh -c "test -f u/manifest.json -a -f u/val-00000.shard && grep -q '\"max_length\": 512' u/manifest.json"
check "... the user's files are intact" users_ok u
mkdir n && echo user > n/train.bin
run "$PREP" -q --force -o n "$C/val.jsonl.zst"
check "--force in nanoGPT's layout keeps the user's train.bin (exit $st)" sh -c "test $st -eq 0 && test \"\$(cat n/train.bin)\" = user"
mkdir tk && echo mine > tk/tokenizer
cp moved/tokenizer/tok.json tok300.json
run "$PREP" -q -o tk -L 64 -t tok300.json "$C/val.jsonl.zst"
expect "a user's file named tokenizer: refused, named" 1 "'tk/tokenizer' is in the way"
rm tk/tokenizer && mkdir tk/tokenizer && echo mine > tk/tokenizer/tok300.json
run "$PREP" -q -o tk -L 64 -t tok300.json "$C/val.jsonl.zst"
expect "a user's file where the tokenizer's copy goes: refused, named" 1 "'tk/tokenizer/tok300.json' is in the way"
check "... and kept" grep -qx mine tk/tokenizer/tok300.json
# a manifest.json.tmp that a run killed while writing its first manifest left (no manifest.json
# yet): the start of one, or empty, is pile-prep's; another content is a user's
run "$PREP" -q -o mt "$C/val.jsonl.zst"
mkdir mt1 mt2 mt3
head -c 200 mt/manifest.json > mt1/manifest.json.tmp
run "$PREP" -q -o mt1 "$C/val.jsonl.zst"
check "a manifest.json.tmp cut short by a kill (a manifest's first 200 bytes): the rerun goes on (exit $st)" \
    test $st -eq 0 -a -f mt1/manifest.json -a ! -e mt1/manifest.json.tmp
: > mt2/manifest.json.tmp
run "$PREP" -q -o mt2 "$C/val.jsonl.zst"
check "... an empty one too (exit $st)" test $st -eq 0 -a -f mt2/manifest.json -a ! -e mt2/manifest.json.tmp
printf '{\n  "format": "my notes"}\n' > mt3/manifest.json.tmp
run "$PREP" -q -o mt3 "$C/val.jsonl.zst"
expect "a user's manifest.json.tmp of another content: refused, named" 1 "'mt3/manifest.json.tmp' is in the way"
check "... and kept" grep -q "my notes" mt3/manifest.json.tmp

# ======================================================= subset names
"$PY" - > names.jsonl <<'EOF'
import json
print(json.dumps({"text": "empty name", "meta": {"pile_set_name": ""}}))
print(json.dumps({"text": "nul name", "meta": {"pile_set_name": "a\u0000b"}}))
print(json.dumps({"text": "long name", "meta": {"pile_set_name": "L" * 70000}}))
print(json.dumps({"text": "control characters", "meta": {"pile_set_name": "evil\u001b[31mred\u0007"}}))
for i in range(65540):
    print(json.dumps({"text": "d%d" % i, "meta": {"pile_set_name": "n%d" % i}}))
EOF
run "$PREP" -o names names.jsonl
expect "bad and excess subset names: the run finishes (exit 0)" 0 "lines read 65544 = documents 65544"
expect "... counted by reason in the summary" 0 "subset names fixed \(documents\): empty 1 nul 1 too_long 1 over_limit 8"
expect "... warned with file:line" 0 "warning: the subset name of 'names.jsonl:1' is empty"
expect "... the 70,000-byte one" 0 "'names.jsonl:3' is longer than 65,535 bytes"
if grep -q "$(printf '\033')" "$TMP/err"; then fail "no raw escape character in pile-prep's summary"; else ok "no raw escape character in pile-prep's summary"; fi
check "... the manifest counts them" "$PY" -c "
import json
f = json.load(open('names/manifest.json'))['stats']['splits']['train']['subset_names_fixed']
assert f == {'empty': 1, 'nul': 1, 'too_long': 1, 'utf8': 0, 'over_limit': 8}, f"
run "$DUMP" --json names
check "the shard holds 65,536 names, the most it can" "$PY" -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['shards'][0]['subsets'] == 65536, d['shards'][0]['subsets']
assert d['subsets']['unknown']['documents'] == 9, d['subsets']['unknown']
assert 'a\ufffdb' in d['subsets'] and 'L' * 65535 in d['subsets']" "$TMP/out"
run "$DUMP" --verify names
expect "pile-dump --verify accepts it" 0 "verify: ok"
if grep -q "$(printf '\033')" "$TMP/out"; then fail "pile-dump prints no raw escape character"; else ok "pile-dump prints no raw escape character"; fi
expect "... it shows the name escaped" 0 'evil\\x1b\[31mred\\x07'

# ================================ one writer; kill -9; damaged kept files
if [ -f "$GPT2/vocab.bpe" ]; then
    ARGS="-j 1 -L 256 --shard-size 0.25 --megatron -t $GPT2 $C/train $C/val.jsonl.zst"
    "$PREP" -q -o ref $ARGS > out 2> err
    check "a reference run (GPT-2, many shards, --megatron)" test $? -eq 0 -a "$(nshards ref)" -ge 8
    mkdir k && echo draft > k/thesis.tmp
    "$PREP" -q -o k $ARGS > k1.out 2> k1.err &
    pid=$!
    wait_shards k 3 $pid
    run "$PREP" -q -o k $ARGS
    alive=0
    kill -0 $pid 2> /dev/null && alive=1
    expect "a second run on a folder in use: exit 1, the holder named" 1 "folder 'k' is in use by pile-prep \(pid $pid on host"
    check "... it refused at once (the first still runs)" test $alive -eq 1
    kill -9 $pid 2> /dev/null
    wait $pid 2> /dev/null
    kept=$("$PY" -c "import json; print(json.load(open('k/manifest.json'))['shards'][0]['file'])" 2> /dev/null)
    if [ -n "$kept" ]; then
        flip 5000 "k/$kept"
        flip 5001 "k/$kept"
    fi
    run "$PREP" -o k $ARGS
    expect "after kill -9: a new run starts and resumes without cleanup" 0 "resuming in 'k'"
    expect "... it re-read the kept shards and says the cost" 0 "kept files: [0-9]+ checked against the manifest's checksums \([0-9.]+ MB read in"
    if [ -n "$kept" ]; then
        expect "... the kept shard with two bytes changed is named and written again" 0 "kept shard '$kept' is damaged"
    else
        ok "# SKIP no shard was recorded before the kill"
    fi
    check "... the output equals the uninterrupted run's" same_dir ref k
    check "... the user's thesis.tmp survives the killed run and the resume" grep -qx draft k/thesis.tmp
    # a finished run: a shard damaged, a Megatron file deleted
    flip 7000 k/train-00002.shard
    rm k/train.bin
    run "$PREP" -o k $ARGS
    expect "a finished run rerun: damaged and missing files written again" 0 "already complete; [0-9]+ damaged or missing files written again"
    expect "... naming them" 0 "kept Megatron file 'train.bin' is damaged or missing"
    check "... byte-identical to the reference" same_dir ref k
    run "$DUMP" --verify k
    expect "... and pile-dump --verify passes" 0 "verify: ok"
else
    ok "# SKIP no GPT-2 fixture: the lock and kept-file checks"
fi

# ========================================== many tiny shards, kill -9
"$PY" -c '
import json
for i in range(250):
    print(json.dumps({"text": ("doc %d " % i).ljust(63, "x")}))' > many.jsonl
TINY="-j 2 -L 64 --shard-size 0.0001220703125 many.jsonl"
"$PREP" -q -o tiny-ref $TINY > out 2> err
check "250 shards of one row each" test "$(nshards tiny-ref)" -eq 250
"$PREP" -q -o tiny $TINY > /dev/null 2>&1 &
pid=$!
wait_shards tiny 100 $pid
kill -9 $pid 2> /dev/null
wait $pid 2> /dev/null
run "$PREP" -q -o tiny $TINY
check "killed after 100 of them, resumed: the same output (exit $st)" same_dir tiny-ref tiny

# ====================================================== small refusals
run "$DUMP" --decode 0 --shard moved/train-00000.shard moved
expect "pile-dump --decode N --shard F PATH: refused, not PATH ignored" 2 "--shard '.*' and PATH 'moved' both given"
run "$PREP" -o wr --pack best-fit --window-rows 0 "$C/val.jsonl.zst"
expect "--window-rows out of range says the range" 2 "bad --window-rows '0' \(1 to 16777216\)"

tap_done
