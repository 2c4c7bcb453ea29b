#!/bin/sh
# CLI test of pile-dump on a shard folder packed from real corpus documents by
# shards_fixture, checked against the fixture's own counts (expected.json);
# --verify against the folder's manifest.json and on damaged rows; shards of
# format version 1.
#   pile_dump_cli.sh PILE_DUMP SHARDS_FIXTURE PYTHON3 SHARD_TOOL
# Speaks TAP; exits 77 when the corpus is absent.
set -u
. "$(dirname "$0")/tap.sh"
DUMP=$1
FIXTURE=$2
PY=$3
STOOL=$4
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
if grep -q "warning" "$TMP/err"; then fail "... without a warning"; else ok "... without a warning"; fi
run "$DUMP" "$D"
expect "the summary says the manifest is complete" 0 "^3 shards in '.*' \(manifest: complete\)"
run "$DUMP" --json "$D"
expect "--json has \"complete\": true" 0 '^  "complete": true,'
expect "--json says each shard has row checksums" 0 '"version": 2, .*"row_checksums": true'

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
# one flipped token byte in row 3 of the first shard (128 two-byte tokens a row):
# the data section's checksum fails, and the row is named
cp "$D/val-00000.shard" "$TMP/bad/val-00000.shard"
"$STOOL" flip "$TMP/bad/train-00000.shard" $((4096 + 3 * 256 + 7))
run "$DUMP" --verify "$TMP/bad"
expect "--verify names the damaged row and both of its checksums" 1 \
    "'.*train-00000.shard': data section checksum mismatch .*; row 3 fails its checksum \(computed [0-9a-f]{16}, the shard records [0-9a-f]{16}\)"
expect "... and counts the problems" 1 "pile-dump: verify: 1 problem in"
rm -rf "$TMP/bad"

# --verify against the manifest: each failure is named, all of them in one run
verify_case() { # NAME PATTERN: a copy of the fixture changed by the commands in $CHANGE
    rm -rf "$TMP/m" && cp -r "$D" "$TMP/m" && (cd "$TMP/m" && eval "$CHANGE")
    run "$DUMP" --verify "$TMP/m"
    expect "$1" 1 "$2"
}
CHANGE="rm train-00001.shard"
verify_case "--verify fails on a missing shard, naming it and the manifest" \
    "verify failed: '.*/m/train-00001.shard' is missing: '.*/m/manifest.json' lists it"
CHANGE="cp train-00000.shard train-00001.shard"
verify_case "--verify fails on a shard overwritten by another, naming what differs" \
    "verify failed: '.*/m/train-00001.shard' is not the shard '.*/m/manifest.json' lists: rows [0-9]+ \(the manifest says [0-9]+\).*data_xxh3 [0-9a-f]{16} \(the manifest says [0-9a-f]{16}\)"
CHANGE="cp train-00001.shard train-00002.shard"
verify_case "--verify fails on an extra shard" \
    "verify failed: '.*/m/train-00002.shard' is not in '.*/m/manifest.json'"
CHANGE="sed 's/\"complete\": true/\"complete\": false/' manifest.json > x && mv x manifest.json"
verify_case "--verify fails on an incomplete folder, saying what to run" \
    "verify failed: '.*/m/manifest.json' says the run that wrote the folder did not finish .*run the same pile-prep command again"
run "$DUMP" --json "$TMP/m"
expect "--json has \"complete\": false" 0 '^  "complete": false,'
run "$DUMP" "$TMP/m"
expect "the summary says the manifest is not complete" 0 "^3 shards in '.*' \(manifest: NOT complete"
CHANGE="rm val-00000.shard; cp train-00001.shard train-00009.shard; sed 's/\"complete\": true/\"complete\": false/' manifest.json > x && mv x manifest.json"
verify_case "--verify names every failure in one run" "pile-dump: verify: 3 problems in"
if [ "$(grep -c "verify failed: " "$TMP/err")" -eq 3 ]; then ok "... one line each"; else fail "... one line each"; fi
rm -rf "$TMP/m" && cp -r "$D" "$TMP/m" && rm "$TMP/m/manifest.json"
run "$DUMP" --verify "$TMP/m"
expect "--verify without a manifest checks the shards and says what it cannot check" 0 \
    "warning: no manifest.json in '.*': each shard is verified, but not whether the folder lacks one"
run "$DUMP" --json "$TMP/m"
expect "--json without a manifest: \"complete\": null" 0 '^  "complete": null,'

# shards of format version 1 (no row checksums): read and verified as before, with one warning
rm -rf "$TMP/v1" && cp -r "$D" "$TMP/v1" && "$STOOL" to-v1 "$TMP/v1"/*.shard
# (the manifest of version 1 shards records their own, smaller sizes)
"$PY" -c "
import json, os, sys
m = json.load(open(sys.argv[1]))
for s in m['shards']:
    s['bytes'] = os.path.getsize(os.path.join(os.path.dirname(sys.argv[1]), s['file']))
json.dump(m, open(sys.argv[1], 'w'))" "$TMP/v1/manifest.json"
run "$DUMP" --verify "$TMP/v1"
expect "--verify passes on version 1 shards" 0 "verify: ok \(3 shards\)"
if [ "$(grep -c "format version 1" "$TMP/err")" -eq 1 ] &&
    grep -q "3 of the 3 shards .* are of format version 1, whose rows carry no checksums.*pile-prep again" "$TMP/err"; then
    ok "... with one warning that their rows cannot be verified, and how to make them again"
else
    fail "... with one warning that their rows cannot be verified"
fi
expect "... and the summary's totals are the same" 0 "^total: $ROWS rows, $DOCS documents, $TOKENS tokens, $PAD padding tokens"
"$STOOL" flip "$TMP/v1/train-00001.shard" $((4096 + 10))
run "$DUMP" --verify "$TMP/v1"
expect "--verify still finds a flipped byte in a version 1 shard (its data section checksum)" 1 \
    "'.*train-00001.shard': data section checksum mismatch"

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
