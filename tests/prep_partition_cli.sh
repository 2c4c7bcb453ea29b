#!/bin/sh
# Many machines and GPT-2 by name, on the real corpus:
# - pile-prep --partition K/N (and a Slurm array task's share, ids from an
#   offset) puts every input file into exactly one of OUT/part-K-of-N/, the
#   same files whatever the folder the inputs lie in; the 3 partitions read
#   as one dataset (pile-dump --json on the folder of partitions) hold the
#   single run's documents and tokens, subset by subset;
# - pile-trainer trains a few steps on the folder of partitions, records
#   the shards as <partition>/<file>, and a resume on fewer partitions is
#   refused as other data;
# - folders made with different tokenizers, and partitions of one input set
#   cut two ways, are refused by pile-dump and pile-trainer; a missing
#   partition is warned about;
# - --tokenizer gpt2 needs no file: pile-tok's ids are tiktoken's r50k
#   reference ids, and a folder with the Pile's layout gets GPT-2 by default.
#   prep_partition_cli.sh PILE_PREP PILE_DUMP PILE_TRAINER PILE_TOK PYTHON3
# Speaks TAP; exits 77 when the corpus is absent.
set -u
. "$(dirname "$0")/tap.sh"
PREP=$1
DUMP=$2
TR=$3
TOK=$4
PY=$5
C=${PILE_SHARED:-../shared}/corpus
for v in PREP DUMP TR TOK C; do
    eval "case \$$v in /*) ;; *) $v=\$(pwd)/\$$v ;; esac"
done
tap_skip_unless "the corpus is absent (set PILE_SHARED)" "$C/val.jsonl.zst" "$C/train/00.jsonl.zst" \
    "$C/ref/val.r50k.jsonl" "$C/ref/tricky.r50k.jsonl"
tap_tmpdir prep-part
cd "$TMP" || exit 1
# no Slurm array of the caller's may choose a partition here
unset SLURM_ARRAY_TASK_ID SLURM_ARRAY_TASK_MIN SLURM_ARRAY_TASK_COUNT SLURM_ARRAY_TASK_STEP

ARGS="-L 256 --tokenizer bytes $C/train $C/val.jsonl.zst"
run "$PREP" -o one $ARGS
expect "a single run of the corpus" 0 "shards"
run "$PREP" -o parts --partition 1/3 $ARGS
expect "--partition 1/3 writes parts/part-1-of-3/ and says so in the summary" 0 \
    "^partition 1 of 3 \(from --partition 1/3\): [0-9]+ of 5 input files.*into 'parts/part-1-of-3'"
run "$PREP" -o parts --partition 2/3 $ARGS
expect "--partition 2/3" 0 "partition 2 of 3"
# a Slurm array --array=4-6: task 6 is the third
run env SLURM_ARRAY_TASK_ID=6 SLURM_ARRAY_TASK_MIN=4 SLURM_ARRAY_TASK_COUNT=3 "$PREP" -o parts $ARGS
expect "a Slurm array task (ids from 4) takes its share: task 6 of 4-6 is partition 3 of 3" 0 \
    "partition 3 of 3 \(from the Slurm array: SLURM_ARRAY_TASK_ID=6"
run env SLURM_ARRAY_TASK_ID=6 SLURM_ARRAY_TASK_MIN=4 SLURM_ARRAY_TASK_COUNT=3 "$PREP" -o whole --partition none $ARGS
if [ $st -eq 0 ] && [ -f whole/manifest.json ] && cmp -s whole/train-00000.shard one/train-00000.shard; then
    ok "--partition none in a Slurm array task processes every input, into OUT itself"
else fail "--partition none"; fi

# every input in exactly one partition; the 3 together are the single run's documents and tokens
if "$PY" - one parts > "$TMP/out" 2> "$TMP/err" <<'PYEOF'
import json, os, sys
one, parts = sys.argv[1], sys.argv[2]
m1 = json.load(open(os.path.join(one, "manifest.json")))
seen = []
for k in (1, 2, 3):
    m = json.load(open(os.path.join(parts, "part-%d-of-3" % k, "manifest.json")))
    p = m["options"]["partition"]
    assert p["index"] == k and p["count"] == 3 and p["inputs_total"] == 5, p
    assert m["complete"], k
    seen += [i["path"] for i in m["inputs"]]
want = [i["path"] for i in m1["inputs"]]
print("inputs of the single run:", want, "of the partitions:", seen)
assert sorted(seen) == sorted(want) and len(set(seen)) == len(seen)
PYEOF
then ok "each of the 5 inputs is in exactly one of the 3 partitions"; else fail "inputs across partitions"; fi

run "$DUMP" --json one
cp "$TMP/out" one.json
run "$DUMP" --json parts
cp "$TMP/out" parts.json
if [ $st -eq 0 ] && "$PY" - one.json parts.json > "$TMP/out" 2> "$TMP/err" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ta, tb = a["totals"], b["totals"]
print("single:", ta, "partitions:", tb)
assert b["complete"] is True and tb["shards"] >= 3
assert ta["documents"] == tb["documents"] > 1000 and ta["tokens"] == tb["tokens"]
assert a["subsets"] == b["subsets"], (a["subsets"], b["subsets"])
for s in a["splits"]:
    assert a["splits"][s]["documents"] == b["splits"][s]["documents"], s
    assert a["splits"][s]["tokens"] == b["splits"][s]["tokens"], s
names = [s["name"] for s in b["shards"]]
assert all(n.split("/")[0] in ("part-1-of-3", "part-2-of-3", "part-3-of-3") for n in names), names
parts = [(f["label"], f["partition"]["index"], f["partition"]["count"]) for f in b["folders"]]
assert parts == [("part-%d-of-3" % k, k, 3) for k in (1, 2, 3)], parts
PYEOF
then ok "pile-dump --json on the folder of partitions: the single run's documents and tokens, per split and subset"
else fail "partition totals"; fi
run "$DUMP" --verify parts/part-3-of-3 parts/part-1-of-3 parts/part-2-of-3
expect "pile-dump --verify takes the partitions as several PATHs, in any order" 0 "^verify: ok"

# the same files elsewhere (another folder, another spelling): the same partition
mkdir -p moved/train && cp "$C"/train/*.jsonl.zst moved/train/ && cp "$C/val.jsonl.zst" moved/
run "$PREP" -o moved-out --partition 2/3 -L 256 --tokenizer bytes ./moved/train moved/val.jsonl.zst
if [ $st -eq 0 ] && "$PY" - parts/part-2-of-3 moved-out/part-2-of-3 > "$TMP/out" 2> "$TMP/err" <<'PYEOF'
import json, os, sys
a, b = (json.load(open(os.path.join(p, "manifest.json"))) for p in sys.argv[1:3])
assert [os.path.basename(i["path"]) for i in a["inputs"]] == [os.path.basename(i["path"]) for i in b["inputs"]]
assert [s["data_xxh3"] for s in a["shards"]] == [s["data_xxh3"] for s in b["shards"]]
assert a["options"]["partition"] == b["options"]["partition"]
PYEOF
then ok "copies of the inputs in another folder make the same partition 2, byte for byte"; else fail "partition moved"; fi

# usage and refusals
run "$PREP" -o x --partition 4/3 $ARGS
expect "--partition 4/3 is a usage error" 2 "bad --partition '4/3'"
run "$PREP" -o x --partition 2/9 $ARGS
expect "more partitions than input files is refused, saying how many at most" 1 \
    "cannot make 9 partitions of 5 input files.*at most 5"
run env SLURM_ARRAY_TASK_ID=9 SLURM_ARRAY_TASK_MIN=4 SLURM_ARRAY_TASK_COUNT=3 "$PREP" -o x $ARGS
expect "a Slurm task id outside its array is refused, naming --partition" 1 "Slurm array task 9 is not one of 3 ids.*--partition"
run env SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=9 SLURM_ARRAY_TASK_COUNT=3 "$PREP" -o x $ARGS
expect "a Slurm array of listed ids (--array=1,4,9) is refused" 1 "not one of 3 ids from 1 by 1"
run env SLURM_ARRAY_TASK_ID=7 SLURM_ARRAY_TASK_MIN=7 SLURM_ARRAY_TASK_MAX=7 SLURM_ARRAY_TASK_COUNT=1 "$PREP" -o x $ARGS
expect "an array of one task (one task run again) is refused, naming --partition" 1 "has one task \(7\).*--partition K/N"
if [ ! -e x ]; then ok "... before anything is written"; else fail "refused Slurm runs wrote x"; fi

run "$DUMP" parts/part-1-of-3,parts/part-3-of-3
expect "a missing partition is warned about, naming it" 0 "warning: only 2 of the 3 partitions .* missing: 2$"
run "$PREP" -o halves --partition 1/2 $ARGS
run "$DUMP" parts/part-1-of-3 halves/part-1-of-2
expect "partitions of one input set cut two ways are refused" 1 "cut two ways, so documents would be read twice"
run "$DUMP" parts/part-1-of-3 parts/part-1-of-3/
expect "a folder given twice is refused" 1 "are the same folder"
cp "$C/val.jsonl.zst" docs.jsonl.zst
run "$PREP" -o g2 -L 256 --tokenizer gpt2 docs.jsonl.zst
expect "--tokenizer gpt2 needs no file, and the summary names it" 0 "^tokenizer: gpt2, GPT-2's vocabulary built into pile \(given\)"
if [ -f g2/tokenizer/encoder.json ] && [ -f g2/tokenizer/vocab.bpe ]; then
    ok "... its files are copied into OUT/tokenizer/ as for a GPT-2 folder"; else fail "gpt2 copy"; fi
run "$DUMP" parts/part-1-of-3,g2
expect "pile-dump refuses folders of different tokenizers, naming both" 1 \
    "cannot read 'parts/part-1-of-3' and 'g2' as one dataset: they were made with different tokenizers"

# training on the partitions as one dataset
COMMON="--model tiny --batch_size 4 --threads 1 --eval_rows 16 --seed 7 --max_length 64"
run "$TR" --data parts $COMMON --max_steps 3 --checkpoint_dir run
expect "pile-trainer trains on the folder of partitions" 0 "trained 3 of 3 steps"
if grep -q '"file": "part-2-of-3/val-00000.shard"' run/step-0000003/trainer_state.json &&
   grep -q '"file": "part-1-of-3/train-00000.shard"' run/step-0000003/trainer_state.json; then
    ok "... the checkpoint's dataset identity names each shard with its partition"
else fail "identity of a multi-folder dataset"; fi
run "$TR" --data parts $COMMON --max_steps 5 --checkpoint_dir run --resume
expect "... and resumes on the same partitions" 0 "trained 5 of 5 steps"
run "$TR" --data parts/part-1-of-3,parts/part-2-of-3 $COMMON --max_steps 7 --checkpoint_dir run --resume
expect "a resume on 2 of the 3 partitions is other data: refused, naming the missing shard" 1 \
    "'part-3-of-3/train-00000.shard', one of the checkpoint's 4 shards, is missing"
run "$TR" --data parts/part-1-of-3,g2 $COMMON --max_steps 1 --checkpoint_dir run2
expect "pile-trainer refuses folders of different tokenizers" 1 "made with different tokenizers"
# without val shards, every partition gives its own held-out share
run "$TR" --data parts/part-1-of-3,parts/part-3-of-3 $COMMON --max_steps 1 --checkpoint_dir run3 --val_fraction 0.01
expect "partitions without val shards train, each holding out its share" 0 "trained 1 of 1 steps"

# GPT-2 by name
run "$TR" --data g2 --tokenizer gpt2 $COMMON --max_steps 1 --checkpoint_dir rung2
if [ $st -eq 0 ] && cmp -s rung2/step-0000001/tokenizer/encoder.json g2/tokenizer/encoder.json &&
   cmp -s rung2/step-0000001/tokenizer/vocab.bpe g2/tokenizer/vocab.bpe &&
   grep -q '"tokenizer_spec": "gpt2"' rung2/step-0000001/config.json; then
    ok "pile-trainer --tokenizer gpt2: the checkpoint carries GPT-2's two files and names gpt2"
else fail "trainer --tokenizer gpt2"; fi
run "$TOK" encode --tokenizer gpt2 "$C/val.jsonl.zst"
if [ $st -eq 0 ] && cmp -s "$TMP/out" "$C/ref/val.r50k.jsonl"; then
    ok "pile-tok --tokenizer gpt2: tiktoken r50k's ids on val.jsonl.zst"; else fail "gpt2 ids on val"; fi
run "$TOK" encode --tokenizer gpt2 "$C/tricky.jsonl"
if [ $st -eq 0 ] && cmp -s "$TMP/out" "$C/ref/tricky.r50k.jsonl"; then
    ok "pile-tok --tokenizer gpt2: tiktoken r50k's ids on tricky.jsonl"; else fail "gpt2 ids on tricky"; fi
mkdir -p pile/train && cp "$C/val.jsonl.zst" pile/train/00.jsonl.zst
run "$PREP" -o pile-out -L 256 pile
expect "a folder with the Pile's layout gets GPT-2 without --tokenizer, and says why" 0 \
    "^tokenizer: gpt2, GPT-2's vocabulary built into pile \(the default for the Pile's layout of 'pile'"
if grep -q '"vocab_size": 50257' pile-out/manifest.json &&
   [ "$(grep -o '"tokenizer_fingerprint": "[0-9a-f]*"' pile-out/manifest.json)" = \
     "$(grep -o '"tokenizer_fingerprint": "[0-9a-f]*"' g2/manifest.json)" ]; then
    ok "... the same tokenizer as --tokenizer gpt2"; else fail "pile layout default"; fi
mkdir gpt2
run "$PREP" -o g3 -L 256 --tokenizer gpt2 docs.jsonl.zst
expect "--tokenizer gpt2 beside a folder named gpt2 says which one is read" 0 \
    "note: 'gpt2' is the tokenizer built into pile, not the folder 'gpt2' here \(write './gpt2' for that one\)"
run "$PREP" -o pile-bytes -L 256 pile/train
expect "a folder without that layout keeps the bytes default" 0 "^tokenizer: bytes \(the default\)"

tap_done
