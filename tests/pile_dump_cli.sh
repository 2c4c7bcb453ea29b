#!/bin/sh
# CLI test of pile-dump on a shard folder packed from real corpus documents by
# shards_fixture, checked against the fixture's own counts (expected.json).
#   pile_dump_cli.sh PILE_DUMP SHARDS_FIXTURE PYTHON3
# Speaks TAP; exits 77 when the corpus is absent.
set -u
. "$(dirname "$0")/tap.sh"
DUMP=$1
FIXTURE=$2
PY=$3
tap_tmpdir dump-cli
D=$TMP/shards

"$FIXTURE" "$D" > "$TMP/fixture.out" 2>&1
rc=$?
if [ $rc -eq 77 ]; then
    cat "$TMP/fixture.out"
    exit 77
fi
if [ $rc -ne 0 ]; then
    echo "Bail out! shards_fixture failed: $(cat "$TMP/fixture.out")"
    exit 1
fi

want() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))$1)" "$D/expected.json"; }

ROWS=$(want "['totals']['rows']")
DOCS=$(want "['totals']['documents']")
TOKENS=$(want "['totals']['tokens']")
PAD=$(want "['totals']['padding_tokens']")

run "$DUMP" "$D"
expect "summary runs" 0 "^3 shards in"
expect "summary has the totals" 0 "^total: $ROWS rows, $DOCS documents, $TOKENS tokens, $PAD padding tokens"
expect "summary has splits and a length histogram" 0 "document lengths in tokens"
expect "summary has best-fit segments for val" 0 "^split val: 1 shard, .* documents in [0-9]+ segments"

run "$DUMP" --json "$D"
cp "$TMP/out" "$TMP/summary.json"
if [ $st -eq 0 ] && "$PY" - "$TMP/summary.json" "$D/expected.json" > "$TMP/out" 2> "$TMP/err" <<'EOF'
import json, sys
got = json.load(open(sys.argv[1]))
exp = json.load(open(sys.argv[2]))
bad = []
for k in ("rows", "documents", "tokens", "padding_tokens"):
    if got["totals"][k] != exp["totals"][k]:
        bad.append(f"totals.{k}: {got['totals'][k]} != {exp['totals'][k]}")
for split, e in exp["splits"].items():
    g = got["splits"].get(split, {})
    for k, v in e.items():
        if g.get(k) != v:
            bad.append(f"splits.{split}.{k}: {g.get(k)} != {v}")
if got["subsets"] != exp["subsets"]:
    bad.append(f"subsets: {got['subsets']} != {exp['subsets']}")
names = [s["name"] for s in got["shards"]]
if names != ["train-00000.shard", "train-00001.shard", "val-00000.shard"]:
    bad.append(f"shard names {names}")
if got["shards"][1]["first_row"] != exp["cut_row"]:
    bad.append(f"train-00001 starts at row {got['shards'][1]['first_row']}, not {exp['cut_row']}")
if sum(s["rows"] for s in got["shards"]) != exp["totals"]["rows"]:
    bad.append("per-shard rows do not add up")
hist = got["splits"]["train"]["length_histogram"]
if sum(b["count"] for b in hist) != exp["splits"]["train"]["documents"]:
    bad.append("the train histogram does not count every document (one continues across shards)")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
then ok "--json parses and its totals, splits, subsets and shards match the fixture"; else fail "--json summary"; fi

run "$DUMP" --verify "$D"
expect "--verify passes on good shards" 0 "verify: ok \(3 shards\)"

# one flipped byte in the token data of the second shard (offset 4096 + 10)
cp -r "$D" "$TMP/bad"
"$PY" -c "
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[4096 + 10] ^= 0x01
open(p, 'wb').write(b)" "$TMP/bad/train-00001.shard"
run "$DUMP" --verify "$TMP/bad"
expect "--verify fails on a flipped data byte, naming shard and section" 1 \
    "pile-dump: verify failed: '.*train-00001.shard': (data section checksum|row 0 position 5)"
# one flipped byte in the row table of the val shard (row_offset is the u64 at 112)
cp "$D/train-00001.shard" "$TMP/bad/train-00001.shard"
"$PY" -c "
import struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
rows = struct.unpack_from('<Q', b, 112)[0]
b[rows + 16 + 8] ^= 0x04
open(p, 'wb').write(b)" "$TMP/bad/val-00000.shard"
run "$DUMP" --verify "$TMP/bad"
expect "--verify fails on a flipped row-table byte" 1 "'.*val-00000.shard': row table checksum mismatch"
head -c 5000 "$D/val-00000.shard" > "$TMP/cut.shard"
run "$DUMP" "$TMP/cut.shard"
expect "a truncated shard is refused" 1 "pile-dump: '.*cut.shard' is truncated: 5000 bytes, header says"

HEAD=$(want "['row0_head']")
run "$DUMP" --decode 0 "$D"
expect "--decode 0 prints ids" 0 "^ids: [0-9]+ [0-9]+"
if [ $st -eq 0 ] && grep -qF -- "$HEAD" "$TMP/out"; then ok "--decode 0 prints the text of the first document"; else fail "--decode text"; fi
LAST=$((ROWS - 1))
run "$DUMP" --decode "$LAST" "$D"
expect "--decode counts rows across shards" 0 "^row $LAST \('val-00000.shard' row [0-9]+\)"
run "$DUMP" --decode "$ROWS" "$D"
expect "--decode past the end fails" 1 "no row $ROWS"
run "$DUMP" --decode 1 --shard "$D/val-00000.shard"
expect "--shard decodes a row of one shard" 0 "^row 1 \('val-00000.shard' row 1\)"
run "$DUMP" --decode 0 --tokenizer "$PILE_SHARED/fixtures/gpt2/r50k_base.tiktoken" "$D"
if [ -f "$PILE_SHARED/fixtures/gpt2/r50k_base.tiktoken" ]; then
    expect "--decode refuses a tokenizer whose fingerprint differs" 1 "is not the one .* was made with"
else
    ok "# SKIP no GPT-2 fixture"
fi

run "$DUMP" "$TMP/nothing-here"
expect "a missing path is an error" 1 "^pile-dump: cannot open '.*nothing-here'"
run "$DUMP" --no-such-option "$D"
expect "an unknown option is a usage error" 2 "usage: pile-dump"
run "$DUMP"
expect "no PATH is a usage error" 2 "usage: pile-dump"
run "$DUMP" "$D" --decode
expect "an option without its value says so" 2 "^pile-dump: option '--decode' needs a value"
run "$DUMP" --verify=yes "$D"
expect "a value for a flag says so" 2 "^pile-dump: option '--verify' takes no value"
run "$DUMP" --decode x "$D"
expect "a bad row number is a usage error" 2 "--decode wants a row number"
run "$DUMP" --help
expect "--help" 0 "^usage: pile-dump"

tap_done
