#!/bin/sh
# Single-thread (and 2-thread) encode throughput of pile-tok against tiktoken
# and Hugging Face tokenizers on the same texts (the shared corpus train
# files, GPT-2 r50k), side by side from one run, with the ratios. Texts are
# loaded into memory before timing; each figure is the best of --repeat runs.
# Then pile-prep's scaling from 1 to 2 worker threads on the same files
# (whole job: zstd, JSON, tokenizer, packing, shard writing).
# usage: bench/tok.sh [BUILD_DIR]   (default: build-bench, set up as release)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${PILE_SHARED:-$ROOT/../shared}
BUILD=${1:-$ROOT/build-bench}
REPEAT=${REPEAT:-3}
[ -d "$BUILD" ] || meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
ninja -C "$BUILD" tools/pile-tok preprocess/pile-prep >/dev/null
TOK="$BUILD/tools/pile-tok"
PREP="$BUILD/preprocess/pile-prep"
GPT2="$SHARED/fixtures/gpt2"
set -- "$SHARED"/corpus/train/*.jsonl.zst

field() { sed -n "s/^$1: //p"; }
ours1=$("$TOK" bench --tokenizer "$GPT2" --repeat "$REPEAT" "$@")
ours2=$("$TOK" bench --tokenizer "$GPT2" --repeat "$REPEAT" --threads 2 "$@")
ourstk=$("$TOK" bench --tokenizer "$GPT2/r50k_base.tiktoken" --repeat "$REPEAT" "$@")

pyref() { # threads files...
    t=$1
    shift
    RAYON_NUM_THREADS=$t TOKENIZERS_PARALLELISM=true python3 - "$GPT2" "$t" "$REPEAT" "$@" <<'PY'
import json, os, subprocess, sys, time
gpt2, threads, repeat, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
import tiktoken, tiktoken.load
from tokenizers import Tokenizer, models, pre_tokenizers
texts = []
for f in files:
    for line in subprocess.run(["zstd", "-dc", f], check=True, capture_output=True).stdout.split(b"\n"):
        if line:
            d = json.loads(line)
            if isinstance(d, dict) and isinstance(d.get("text"), str):
                texts.append(d["text"])
nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
tk = tiktoken.Encoding("r50k_base", pat_str=pat, special_tokens={"<|endoftext|>": 50256},
                       mergeable_ranks=tiktoken.load.load_tiktoken_bpe(os.path.join(gpt2, "r50k_base.tiktoken")))
hf = Tokenizer(models.BPE.from_file(os.path.join(gpt2, "encoder.json"), os.path.join(gpt2, "vocab.bpe")))
hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
def best(fn):
    b = None
    for _ in range(repeat):
        t0 = time.perf_counter(); n = fn(); dt = time.perf_counter() - t0
        b = dt if b is None or dt < b else b
    return b, n
if threads == 1:
    tt, tn = best(lambda: sum(len(tk.encode_ordinary(t)) for t in texts))
else:
    tt, tn = best(lambda: sum(map(len, tk.encode_ordinary_batch(texts, num_threads=threads))))
ht, hn = best(lambda: sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False)))
print("tiktoken %.4f %d %d" % (tt, tn, nbytes))
print("hf %.4f %d %d" % (ht, hn, nbytes))
PY
}
ref1=$(pyref 1 "$@")
ref2=$(pyref 2 "$@")

python3 - "$ours1" "$ours2" "$ourstk" "$ref1" "$ref2" <<'PY'
import sys
def kv(s): return dict(l.split(": ", 1) for l in s.strip().split("\n"))
o1, o2, otk = kv(sys.argv[1]), kv(sys.argv[2]), kv(sys.argv[3])
def ref(s):
    r = {}
    for l in s.strip().split("\n"):
        name, t, n, b = l.split(); r[name] = (float(t), int(n), int(b))
    return r
r1, r2 = ref(sys.argv[4]), ref(sys.argv[5])
rows = []
def row(name, threads, secs, tokens, nbytes):
    rows.append((name, threads, nbytes / secs / 1e6, tokens / secs))
row("pile-tok (encoder.json+vocab.bpe)", 1, float(o1["seconds"]), int(o1["tokens"]), int(o1["bytes"]))
row("pile-tok (r50k_base.tiktoken)", 1, float(otk["seconds"]), int(otk["tokens"]), int(otk["bytes"]))
row("tiktoken encode_ordinary", 1, *r1["tiktoken"])
row("HF tokenizers encode_batch", 1, *r1["hf"])
row("pile-tok (encoder.json+vocab.bpe)", 2, float(o2["seconds"]), int(o2["tokens"]), int(o2["bytes"]))
row("tiktoken encode_ordinary_batch", 2, *r2["tiktoken"])
row("HF tokenizers encode_batch", 2, *r2["hf"])
print("| encoder | threads | MB/s | tokens/s |")
print("|---|---:|---:|---:|")
for n, t, mb, tps in rows:
    print("| %s | %d | %.2f | %.0f |" % (n, t, mb, tps))
same = int(o1["tokens"]) == r1["tiktoken"][1] == r1["hf"][1]
print()
print("bytes: %s, tokens: %s (same token count from all three: %s)" % (o1["bytes"], o1["tokens"], "yes" if same else "NO"))
print("pile-tok / tiktoken, 1 thread: %.1fx; pile-tok / HF, 1 thread: %.1fx" % (rows[0][2] / rows[2][2], rows[0][2] / rows[3][2]))
print("pile-tok / tiktoken, 2 threads: %.1fx; pile-tok / HF, 2 threads: %.1fx" % (rows[4][2] / rows[5][2], rows[4][2] / rows[6][2]))
PY

# pile-prep, whole job, 1 and 2 workers: best wall time of REPEAT runs each.
PREPTMP=$(mktemp -d "${TMPDIR:-/tmp}/pile-bench-tok-XXXXXX")
trap 'rm -rf "$PREPTMP"' EXIT
prep_best() { # threads files...
    nt=$1
    shift
    best=
    i=0
    while [ $i -lt "$REPEAT" ]; do
        t0=$(date +%s.%N)
        "$PREP" -q --force -j "$nt" -t "$GPT2" -o "$PREPTMP/out" "$@" >/dev/null
        t1=$(date +%s.%N)
        best=$(python3 -c "import sys; a=float(sys.argv[1])-float(sys.argv[2]); b=sys.argv[3]; print(a if not b or a < float(b) else b)" "$t1" "$t0" "$best")
        i=$((i + 1))
    done
    echo "$best"
}
jsonl=$(for f in "$@"; do zstd -dc "$f"; done | wc -c)
p1=$(prep_best 1 "$@")
p2=$(prep_best 2 "$@")
python3 - "$jsonl" "$p1" "$p2" "$ours1" "$ours2" <<'PY'
import sys
jsonl, p1, p2 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
def kv(s): return dict(l.split(": ", 1) for l in s.strip().split("\n"))
o1, o2 = kv(sys.argv[4]), kv(sys.argv[5])
e1 = int(o1["bytes"]) / float(o1["seconds"]) / 1e6
e2 = int(o2["bytes"]) / float(o2["seconds"]) / 1e6
print()
print("| job | 1 thread MB/s | 2 threads MB/s | 2 / 1 |")
print("|---|---:|---:|---:|")
print("| pile-tok encode (text in memory) | %.2f | %.2f | %.2fx |" % (e1, e2, e2 / e1))
print("| pile-prep, whole job (JSONL from .zst to shards) | %.2f | %.2f | %.2fx |" % (jsonl / p1 / 1e6, jsonl / p2 / 1e6, p1 / p2))
PY
