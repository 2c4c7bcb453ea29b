#!/bin/sh
# End to end across the tools, on real data with the real GPT-2 tokenizer:
# pile-prep writes shards, pile-dump reads them back with the tokenizer the
# manifest names, and pile-tok agrees with the shards' tokens; the shards are
# of format version 2 with the row checksums FORMAT.md defines.
#   e2e_cli.sh PILE_PREP PILE_DUMP PILE_TOK PYTHON3 SHARD_TOOL
# Speaks TAP; exits 77 when the corpus or GPT-2 fixtures are absent.
set -u
. "$(dirname "$0")/tap.sh"
PREP=$1 DUMP=$2 TOK=$3 PY=$4 STOOL=$5
for v in PREP DUMP TOK STOOL; do
    eval "p=\$$v"
    case $p in /*) ;; *) eval "$v=\$(pwd)/\$p" ;; esac
done
SHARED=${PILE_SHARED:-../shared}
case $SHARED in /*) ;; *) SHARED=$(pwd)/$SHARED ;; esac
VAL=$SHARED/corpus/val.jsonl.zst
GPT2=$SHARED/fixtures/gpt2
tap_skip_unless "the shared corpus or GPT-2 fixtures are absent (set PILE_SHARED)" "$VAL" "$GPT2/vocab.bpe"
tap_tmpdir e2e
cd "$TMP" || exit 1

"$PREP" -q -o out -L 512 --tokenizer "$GPT2" "$VAL" 2>err
check "pile-prep with the GPT-2 folder succeeds" test $? -eq 0
"$DUMP" --verify out >verify 2>&1
check "pile-dump --verify accepts the shards" test $? -eq 0
bad=""
for f in out/*.shard; do "$STOOL" row-sums "$f" >/dev/null 2>&1 || bad="$bad $f"; done
check "pile-prep writes version 2 shards whose row checksums are FORMAT.md's${bad:+ (not:$bad)}" test -z "$bad"

# The first document's text, and what pile-dump decodes from row 0 with the
# tokenizer recorded in the manifest (no --tokenizer given).
"$PY" -c '
import json, subprocess, sys
line = subprocess.run(["zstd", "-dc", sys.argv[1]], check=True, capture_output=True).stdout.split(b"\n")[0]
sys.stdout.write(json.loads(line)["text"][:200])' "$VAL" >first.txt
"$DUMP" --decode 0 out >decoded 2>err
rc=$?
check "pile-dump --decode 0 uses the manifest's tokenizer" test $rc -eq 0
check "the decoded row starts with the first document's text" grep -qF "$(head -n 1 first.txt)" decoded

# Totals: every document of val is in the shards, and the tokens are the
# documents' GPT-2 ids (pile-tok, checked against tiktoken elsewhere) plus one
# end-of-text each.
"$DUMP" --json out >dump.json
"$TOK" encode --tokenizer "$GPT2" "$VAL" >ids.jsonl
"$PY" - dump.json ids.jsonl >totals 2>&1 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ids = [json.loads(l) for l in open(sys.argv[2])]
docs = [x for x in ids if x is not None]
want_tokens = sum(len(x) + 1 for x in docs)
t = d["totals"]
print("documents", t["documents"], len(docs), "tokens", t["tokens"], want_tokens)
sys.exit(0 if t["documents"] == len(docs) and t["tokens"] == want_tokens else 1)
PY
rc=$?
check "pile-dump totals equal pile-tok's documents and tokens (+1 end-of-text each): $(cat totals)" test $rc -eq 0

tap_done
