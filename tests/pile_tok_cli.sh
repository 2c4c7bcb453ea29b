#!/bin/sh
# CLI test of pile-tok's command-line handling: exit codes (0 ok, 1 failure,
# 2 usage), messages that name the option, help texts, and a bytes-tokenizer
# round trip of the first real corpus documents through encode and decode.
#   pile_tok_cli.sh PILE_TOK PYTHON3
# Speaks TAP; exits 77 when the corpus is absent.
set -u
TOK=$1
PY=$2
SAMPLE=${PILE_SHARED:-../shared}/corpus/sample.jsonl
if [ ! -f "$SAMPLE" ]; then
    echo "1..0 # SKIP no corpus at $SAMPLE"
    exit 77
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pile-tok-cli-XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$TMP/out" "$TMP/err" 2>/dev/null | head -20; }
# run CMD...: stdout to $TMP/out, stderr to $TMP/err, status to $st
run() { "$@" > "$TMP/out" 2> "$TMP/err"; st=$?; }
# expect NAME STATUS PATTERN (grep -E over stdout+stderr)
expect() {
    if [ "$st" -eq "$2" ] && cat "$TMP/out" "$TMP/err" | grep -Eq -- "$3"; then ok "$1"; else fail "$1 (status $st)"; fi
}

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

echo "1..$n"
[ $failed -eq 0 ]
