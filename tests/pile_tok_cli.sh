#!/bin/sh
# CLI test of pile-tok's command-line handling: exit codes (0 ok, 1 failure,
# 2 usage), messages that name the option, help texts, a bytes-tokenizer
# round trip of the first real corpus documents through encode and decode,
# and encode --text-key on the same documents under another member.
#   pile_tok_cli.sh PILE_TOK PYTHON3
# Speaks TAP; exits 77 when the corpus is absent.
set -u
. "$(dirname "$0")/tap.sh"
TOK=$1
PY=$2
SAMPLE=${PILE_SHARED:-../shared}/corpus/sample.jsonl
tap_skip_unless "no corpus at $SAMPLE" "$SAMPLE"
tap_tmpdir tok-cli

# Real documents: the first 20 lines of the corpus sample.
head -n 20 "$SAMPLE" > "$TMP/docs.jsonl"
run "$TOK" encode --tokenizer bytes "$TMP/docs.jsonl"
cp "$TMP/out" "$TMP/ids.jsonl"
expect "encode writes one id array per line" 0 "^\[[0-9]+(,[0-9]+)*\]$"
run "$TOK" decode --tokenizer bytes --json "$TMP/ids.jsonl"
cp "$TMP/out" "$TMP/texts.jsonl"
if [ $st -eq 0 ] && "$PY" - "$TMP/docs.jsonl" "$TMP/texts.jsonl" > "$TMP/out" 2> "$TMP/err" <<'PYEOF'
import json, sys
docs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
texts = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
want = [d["text"] if isinstance(d, dict) and isinstance(d.get("text"), str) else "" for d in docs]
bad = [i for i, (a, b) in enumerate(zip(want, texts)) if a != b]
print(f"{len(docs)} documents, {len(texts)} texts, first difference at {bad[:1]}")
sys.exit(0 if len(texts) == len(docs) and not bad else 1)
PYEOF
then ok "decode --json gives back each document's text"; else fail "decode round trip"; fi

# the same documents with their text under another member: --text-key gives the same ids
"$PY" -c '
import json, sys
for l in open(sys.argv[1], encoding="utf-8"):
    d = json.loads(l)
    print(json.dumps({"doc": {"body": d.get("text")}, "text": "decoy"}))
' "$TMP/docs.jsonl" > "$TMP/rekeyed.jsonl"
run "$TOK" encode --tokenizer bytes --text-key doc.body "$TMP/rekeyed.jsonl"
if [ $st -eq 0 ] && cmp -s "$TMP/out" "$TMP/ids.jsonl"; then ok "encode --text-key doc.body gives the ids of the same text under text"
else fail "encode --text-key"; fi
run "$TOK" encode --tokenizer bytes --text-key 'doc..body' "$TMP/rekeyed.jsonl"
expect "a bad --text-key is a usage error naming it" 2 "bad text key 'doc..body'"

run "$TOK" encode --tokenizer bytes --text < "$TMP"
expect "unreadable standard input is an error, not an empty text" 1 "^pile-tok: cannot read standard input"
run "$TOK" encode --no-such-option "$TMP/docs.jsonl"
expect "an unknown option names itself and shows the command's help" 2 "^pile-tok: unknown option '--no-such-option'"
if grep -q "^usage: pile-tok encode" "$TMP/err"; then ok "... with the encode help"; else fail "encode help after a bad option"; fi
run "$TOK" decode --tokenizer
expect "an option without its value says so" 2 "^pile-tok: option '--tokenizer' needs a value"
run "$TOK" info --tokenizer=bytes --help=yes
expect "a value for a flag says so" 2 "^pile-tok: option '--help' takes no value"
run "$TOK" encode "$TMP/docs.jsonl"
expect "encode without a tokenizer is a usage error" 2 "missing --tokenizer"
run "$TOK" frobnicate
expect "an unknown command is a usage error" 2 "^pile-tok: unknown command 'frobnicate'"
run "$TOK"
expect "no command is a usage error" 2 "^usage: pile-tok COMMAND"
run "$TOK" bench --help
expect "bench --help lists --tokenizer" 0 "^  --tokenizer SPEC"
run "$TOK" info --help
expect "info --help lists its options" 0 "^  -h, --help"
run "$TOK" --help
expect "--help" 0 "^usage: pile-tok COMMAND"

tap_done
