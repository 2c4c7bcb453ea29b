#!/usr/bin/env bash
# train_tok.sh: time our byte-level BPE trainer (pile_bpe_train) against
# Hugging Face tokenizers' BpeTrainer on the same corpus, vocabulary and
# special tokens, both with every core, side by side in one run; wall time and
# peak RSS from /usr/bin/time -v. Prints a markdown block for bench/RESULTS.md.
#
#   bench/train_tok.sh [--corpus DIR] [--build DIR] [--vocab N]
#
# DIR defaults to /var/tmp/pile-corpus-100, built with the shared
# make-corpus.sh (--size-mb 100) when absent. The trainer is run through
# `pile-tok train` when the build has it, else through the unit test's tool
# mode (tests/test_bpe_train train OUT VOCAB THREADS INPUT...).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CORPUS=/var/tmp/pile-corpus-100
BUILD=$ROOT/build
VOCAB=32000
while [ $# -gt 0 ]; do
  case "$1" in
    --corpus) CORPUS=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --vocab) VOCAB=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

SHARED=${PILE_SHARED:-$ROOT/../shared}
if [ ! -d "$CORPUS/train" ]; then
  "$SHARED/tools/make-corpus.sh" --size-mb 100 --out "$CORPUS"
fi
INPUTS=("$CORPUS"/train/*.jsonl.zst)

ninja -C "$BUILD" >/dev/null
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ -x "$BUILD/tools/pile-tok" ] && "$BUILD/tools/pile-tok" train --help >/dev/null 2>&1; then
  OURS=("$BUILD/tools/pile-tok" train --vocab-size "$VOCAB" -o "$OUT/ours.json" "${INPUTS[@]}")
else
  OURS=("$BUILD/tests/test_bpe_train" train "$OUT/ours.json" "$VOCAB" 0 "${INPUTS[@]}")
fi

cat >"$OUT/hf_train.py" <<'EOF'
# HF's BpeTrainer as a user would run it on Pile files: zstd -dc, json.loads, train_from_iterator.
import json, subprocess, sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
out, vocab, inputs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def texts():
    for path in inputs:
        p = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE)
        for line in p.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("text"), str) and doc["text"]:
                yield doc["text"]
        p.wait()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=["<|endoftext|>"],
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(texts(), tr)
tok.save(out)
EOF

measure() { # name, command...: runs it under /usr/bin/time -v, sets WALL and RSS_MB
  local log=$OUT/$1.time
  shift
  /usr/bin/time -v "$@" 2>"$log" >/dev/null
  WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; printf "%.1f", s}' "$log")
  RSS_MB=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$log")
}

TEXT_MB=$(grep -m1 -i 'text' "$CORPUS/STATS.txt" 2>/dev/null || true)
measure ours "${OURS[@]}"
OURS_WALL=$WALL OURS_RSS=$RSS_MB
measure hf python3 "$OUT/hf_train.py" "$OUT/hf.json" "$VOCAB" "${INPUTS[@]}"
HF_WALL=$WALL HF_RSS=$RSS_MB

AGREE=$(python3 - "$OUT/ours.json" "$OUT/hf.json" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1], encoding="utf-8"))["model"]["merges"]
h = [m if isinstance(m, str) else " ".join(m) for m in json.load(open(sys.argv[2], encoding="utf-8"))["model"]["merges"]]
k = 0
while k < min(len(o), len(h)) and o[k] == h[k]:
    k += 1
print("%d of %d merges identical and in the same order (HF made %d)" % (k, len(o), len(h)))
EOF
)

CPU=$(lscpu | awk -F': *' '/Model name/ {print $2; exit}')
NCPU=$(nproc)
HFV=$(python3 -c 'import tokenizers; print(tokenizers.__version__)')
cat <<EOF
### $(date -u +%Y-%m-%d) — vocab $VOCAB, $(du -sh --apparent-size "$CORPUS/train" | cut -f1) of .jsonl.zst in ${#INPUTS[@]} files
Machine: $CPU, $NCPU cores. Command: \`bench/train_tok.sh --corpus $CORPUS --build $(basename "$BUILD")\`
${TEXT_MB:+Corpus: $TEXT_MB}

| trainer | wall (s) | peak RSS (MB) |
|---|---:|---:|
| pile_bpe_train (threads 0) | $OURS_WALL | $OURS_RSS |
| HF tokenizers $HFV BpeTrainer | $HF_WALL | $HF_RSS |

Ratio (HF / ours, wall): $(awk -v a="$HF_WALL" -v b="$OURS_WALL" 'BEGIN {printf "%.2f", a / b}')x. Agreement: $AGREE.
EOF
