#!/bin/sh
# pile-trainer against PyTorch on the CPU: the same GPT-2 model (fp32), the
# same batch and sequence length, the same thread count, full training steps
# (forward, backward, clipping, AdamW), side by side in one run: ms/step,
# tokens/s and the ratio, for the `tiny` preset and the ~10M-parameter
# `small` one (6 layers, 6 heads, 384 wide). Prints a Markdown table for
# bench/RESULTS.md. Each measurement is run REPEAT times and the median
# kept (the machine is shared); within a run, the median step time after
# the first WARM steps.
#
#   bench/train-cpu.sh [BUILD_DIR [OLD_BUILD_DIR]]   (default: build-bench-train beside the sources)
# With OLD_BUILD_DIR (an earlier build's folder, e.g. of the main branch),
# its pile-trainer runs beside ours in every repeat, for before/after
# figures from one session.
# Env: PILE_BENCH_CORPUS (.jsonl(.zst) folder with train/ and val.jsonl.zst;
# default data/sample), PILE_BENCH_TOK (bpe: a BPE trained by pile-tok with
# PILE_BENCH_VOCAB tokens, default 8192; or bytes), PILE_BENCH_THREADS (thread
# counts, default "1 N" with N every core), PILE_BENCH_BATCH (8), PILE_BENCH_SEQ (256), PILE_BENCH_STEPS (12),
# PILE_BENCH_WARM (2), PILE_BENCH_REPEAT (3), PILE_BENCH_MODELS ("tiny small"),
# PILE_BENCH_TMP (work folder, default under /var/tmp).
# The PyTorch side is transformers' GPT2LMHeadModel (sdpa attention, what a
# user gets) with torch.optim.AdamW and clip_grad_norm_.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-train}
OLD=${2:-}
CORPUS=${PILE_BENCH_CORPUS:-$ROOT/data/sample}
TOK=${PILE_BENCH_TOK:-bpe}
VOCAB=${PILE_BENCH_VOCAB:-8192}
THREADS_LIST=${PILE_BENCH_THREADS:-1 $(nproc)}
BATCH=${PILE_BENCH_BATCH:-8}
SEQ=${PILE_BENCH_SEQ:-256}
STEPS=${PILE_BENCH_STEPS:-12}
WARM=${PILE_BENCH_WARM:-2}
REPEAT=${PILE_BENCH_REPEAT:-3}
MODELS=${PILE_BENCH_MODELS:-tiny small}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep trainer/pile-trainer tools/pile-tok >&2
[ -z "$OLD" ] || ninja -C "$OLD" trainer/pile-trainer >&2
PREP=$BUILD/preprocess/pile-prep
TRAINER=$BUILD/trainer/pile-trainer
PTOK=$BUILD/tools/pile-tok
python3 -c 'import torch, transformers' 2>/dev/null ||
    { echo "bench/train-cpu.sh: needs torch and transformers (tools/install-deps.sh)" >&2; exit 1; }

TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-train-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

spec=bytes
if [ "$TOK" = bpe ]; then
    "$PTOK" train --vocab-size "$VOCAB" --threads "$(nproc)" -o "$TMP/tokenizer.json" "$CORPUS"/train/*.jsonl* >&2
    spec=$TMP/tokenizer.json
fi
"$PREP" -q --force -o "$TMP/shards" -L "$SEQ" -t "$spec" -j "$(nproc)" "$CORPUS/train" "$CORPUS/val.jsonl.zst"

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
bt=$(grep -o '"name": "buildtype", "value": "[a-z]*"' "$BUILD/meson-info/intro-buildoptions.json" | sed 's/.*"value": "//; s/"$//')
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $bt build; $(python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
echo "tokenizer: $TOK ($spec), batch $BATCH x seq $SEQ, threads $THREADS_LIST, $STEPS steps per run (median after $WARM), median of $REPEAT runs"
echo

# ours MODEL [TRAINER]: median ms/step of one pile-trainer run, from metrics.jsonl's per-step times
ours() {
    rm -rf "$TMP/ck"
    "${2:-$TRAINER}" train --data "$TMP/shards" --checkpoint_dir "$TMP/ck" --model "$1" --batch_size "$BATCH" \
        --max_length "$SEQ" --max_steps "$STEPS" --eval_interval 1000000 --eval_rows 1 --threads "$THREADS" \
        --learning_rate 3e-4 >/dev/null 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
    python3 "$ROOT/bench/step_ms.py" "$TMP/ck/metrics.jsonl" "$WARM"
}

# torch MODEL: the same in PyTorch on the same shard rows
torch_ms() {
    python3 - "$TMP/shards" "$1" "$BATCH" "$SEQ" "$STEPS" "$WARM" "$THREADS" <<'EOF'
import os, statistics, struct, sys, time
import numpy as np, torch, transformers
shards, model_name, B, T, steps, warm, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
torch.set_num_threads(threads)
dims = {"tiny": (2, 2, 64), "small": (6, 6, 384), "gpt2": (12, 12, 768)}[model_name]
path = os.path.join(shards, sorted(n for n in os.listdir(shards) if n.startswith("train-"))[0])
head = open(path, "rb").read(256)
W, L, V = struct.unpack_from("<III", head, 24)
rows = struct.unpack_from("<Q", head, 48)[0]
data = np.fromfile(path, dtype={2: "<u2", 4: "<u4"}[W], count=rows * L, offset=4096).astype(np.int64).reshape(rows, L)
transformers.logging.set_verbosity_error()
cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_layer=dims[0], n_head=dims[1], n_embd=dims[2],
                              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                              eos_token_id=None)
model = transformers.GPT2LMHeadModel(cfg).float().train()
params = dict(model.named_parameters())
decay = [p for n, p in params.items() if p.dim() == 2 and "wte" not in n and "wpe" not in n]
other = [p for n, p in params.items() if not (p.dim() == 2 and "wte" not in n and "wpe" not in n)]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}], lr=3e-4)
rng = np.random.default_rng(0)
times = []
for s in range(steps):
    idx = rng.integers(0, rows, size=B)
    x = torch.as_tensor(data[idx, :T])
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    times.append(time.perf_counter() - t0)
print("%.3f" % (1000 * statistics.median(times[warm:])))
EOF
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

if [ -n "$OLD" ]; then
    echo "old: $OLD (the columns \"old\" and \"new / old\")"
    echo
    echo "| model | params | threads | old ms/step | pile-trainer ms/step | tokens/s | new / old (time) | PyTorch ms/step | torch / ours (time) | runs (old; ours; torch) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
else
    echo "| model | params | threads | pile-trainer ms/step | tokens/s | PyTorch ms/step | tokens/s | torch / ours (time) | runs (ours; torch) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
fi
for m in $MODELS; do
  for THREADS in $THREADS_LIST; do
    o= t= p=
    for r in $(seq "$REPEAT"); do
        [ -z "$OLD" ] || p="$p $(ours "$m" "$OLD/trainer/pile-trainer")"
        o="$o $(ours "$m")"
        t="$t $(torch_ms "$m")"
    done
    o=$(echo $o) t=$(echo $t) p=$(echo $p)
    om=$(echo "$o" | median)
    tm=$(echo "$t" | median)
    params=$(python3 -c "
import json; c = json.load(open('$TMP/ck/step-$(printf %07d "$STEPS")/config.json'))
V, P, L, C = c['vocab_size'], c['n_positions'], c['n_layer'], c['n_embd']
print('%.2fM' % ((V * C + P * C + L * (12 * C * C + 13 * C) + 2 * C) / 1e6))" 2>/dev/null || echo '?')
    if [ -n "$OLD" ]; then
        pm=$(echo "$p" | median)
        awk -v m="$m" -v p="$params" -v th="$THREADS" -v q="$pm" -v o="$om" -v t="$tm" -v bt=$((BATCH * SEQ)) -v rp="$p" -v ro="$o" -v rt="$t" 'BEGIN {
            printf "| %s | %s | %s | %.1f | %.1f | %.0f | %.3f | %.1f | %.2fx | %s; %s; %s |\n", m, p, th, q, o, bt / o * 1000, o / q, t, t / o, rp, ro, rt }'
    else
        awk -v m="$m" -v p="$params" -v th="$THREADS" -v o="$om" -v t="$tm" -v bt=$((BATCH * SEQ)) -v ro="$o" -v rt="$t" 'BEGIN {
            printf "| %s | %s | %s | %.1f | %.0f | %.1f | %.0f | %.2fx | %s; %s |\n", m, p, th, o, bt / o * 1000, t, bt / t * 1000, t / o, ro, rt }'
    fi
  done
done
