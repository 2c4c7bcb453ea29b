#!/bin/sh
# pile-trainer on one GPU against PyTorch on the same GPU in the same run:
# GPT-2 124M (and gpt2-medium) at T = 1024, bf16, the largest power-of-two
# micro-batch that `pile-trainer plan` says fits the GPU's memory (or
# PILE_BENCH_BATCH): tokens/s, MFU and peak device memory of each, and the
# ratio. PyTorch is transformers' GPT2LMHeadModel with bf16 autocast, fused
# AdamW and torch.compile where it works (said in the table: "compiled" or
# "eager"). MFU on both sides is PaLM's 6N + 12LHQT FLOPs per token
# (trainer/mfu.h) over the peak pile-trainer names for the device. Peak
# memory is the largest memory.used nvidia-smi reports while the run goes
# (CUDA context included, the same measure for both). Prints a Markdown
# table for bench/RESULTS.md. Without a GPU it says so and exits 0.
#
#   bench/train-gpu.sh [BUILD_DIR]   (default: build-bench-gpu beside the sources, release, -Dcuda=enabled)
# Env: PILE_BENCH_MODELS ("gpt2 gpt2-medium"), PILE_BENCH_BATCH (micro-batch;
# default from the plan), PILE_BENCH_STEPS (30), PILE_BENCH_WARM (10: steps
# left out of the medians), PILE_BENCH_COMPILE (1: try torch.compile),
# PILE_BENCH_CORPUS (default data/sample), PILE_BENCH_TMP (work folder,
# default under /var/tmp). tools/gpu-check.sh runs it short:
# PILE_BENCH_MODELS=gpt2 PILE_BENCH_STEPS=20.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-gpu}
MODELS=${PILE_BENCH_MODELS:-gpt2 gpt2-medium}
STEPS=${PILE_BENCH_STEPS:-30}
WARM=${PILE_BENCH_WARM:-10}
COMPILE=${PILE_BENCH_COMPILE:-1}
CORPUS=${PILE_BENCH_CORPUS:-$ROOT/data/sample}
SEQ=1024

if ! gpus=$(nvidia-smi -L 2>/dev/null) || [ -z "$gpus" ]; then
    echo "bench/train-gpu.sh: no GPU here (nvidia-smi -L finds none): nothing measured"
    exit 0
fi
python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null ||
    { echo "bench/train-gpu.sh: needs torch with CUDA and transformers beside the GPU" >&2; exit 1; }
if [ ! -f "$BUILD/build.ninja" ]; then
    # -Dcuda=enabled where the option exists (the CUDA backend's meson option)
    cuda_opt=$(grep -q "option('cuda'" "$ROOT/meson_options.txt" && echo -Dcuda=enabled || true)
    meson setup "$BUILD" "$ROOT" --buildtype=release $cuda_opt >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep trainer/pile-trainer >&2
PREP=$BUILD/preprocess/pile-prep
TRAINER=$BUILD/trainer/pile-trainer

TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-gpu-XXXXXX")
poller=
trap '[ -z "$poller" ] || kill "$poller" 2>/dev/null; rm -rf "$TMP"' EXIT
"$PREP" -q --force -o "$TMP/shards" -L "$SEQ" -t gpt2 -j "$(nproc)" "$CORPUS/train" "$CORPUS/val.jsonl.zst"

gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); GPU: $(echo "$gpus" | head -n 1); driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1), ${gpu_mib} MiB"
bt=$(grep -o '"name": "buildtype", "value": "[a-z]*"' "$BUILD/meson-info/intro-buildoptions.json" | sed 's/.*"value": "//; s/"$//')
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $bt build; $(python3 -c 'import torch, transformers; print("torch", torch.__version__, "CUDA", torch.version.cuda, "transformers", transformers.__version__)')"
echo "bf16, T = $SEQ, $STEPS steps per run, medians after the first $WARM; host: $(nproc) cores"
echo

# poll_start / poll_stop: the largest memory.used (MiB) while a run goes
poll_start() {
    : > "$TMP/mem"
    (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n 1 >> "$TMP/mem"; sleep 0.2; done) &
    poller=$!
}
poll_stop() {
    kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null || true; poller=
    sort -n "$TMP/mem" | tail -n 1
}

# the largest power-of-two micro-batch the planner fits in this GPU (GiB)
plan_batch() {
    b=64
    while [ $b -gt 1 ] && ! "$TRAINER" plan --model "$1" --max_length $SEQ --precision bf16 --batch_size $b \
            --gpus 1 --gpu-mem "$(awk -v m="$gpu_mib" 'BEGIN { printf "%.1f", m / 1024 }')" --data "$TMP/shards" \
            >/dev/null 2>&1; do
        b=$((b / 2))
    done
    echo $b
}

# ours MODEL B: "tokens/s mfu peak_mib peak_tflops" (medians after WARM)
ours() {
    rm -rf "$TMP/ck"
    poll_start
    "$TRAINER" train --backend cuda --precision bf16 --data "$TMP/shards" --checkpoint_dir "$TMP/ck" --model "$1" \
        --batch_size "$2" --max_length $SEQ --max_steps "$STEPS" --log_interval 1 --eval_interval 1000000 \
        --eval_rows 1 --save_interval 0 --learning_rate 3e-4 >"$TMP/out" 2>"$TMP/err" || {
        poll_stop >/dev/null
        echo "pile-trainer failed:" >&2; tail -n 5 "$TMP/err" >&2; echo "failed"; return 0; }
    mem=$(poll_stop)
    peak=$(sed -n 's/.*against a peak of \([0-9.]*\) TFLOP.*/\1/p' "$TMP/err" | head -n 1)
    python3 - "$TMP/ck/metrics.jsonl" "$WARM" "$mem" "${peak:-0}" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in recs if "train/tokens_per_sec" in r][int(sys.argv[2]):]
tps = statistics.median(r["train/tokens_per_sec"] for r in train)
mfu = statistics.median(r.get("train/mfu", 0.0) for r in train)
print("%.0f %.4f %s %s" % (tps, mfu, sys.argv[3], sys.argv[4]))
EOF
}

# torch MODEL B PEAK_TFLOPS: "tokens/s mfu peak_mib mode" on the same shard rows
torch_run() {
    poll_start
    python3 - "$TMP/shards" "$1" "$2" "$SEQ" "$STEPS" "$WARM" "$3" "$COMPILE" >"$TMP/tout" 2>"$TMP/terr" <<'EOF' || true
import os, statistics, struct, sys, time
import numpy as np, torch, transformers
shards, name, B, T, steps, warm, peak, comp = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7]), float(sys.argv[7]), sys.argv[8] == "1"
dims = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280)}[name]
path = os.path.join(shards, sorted(n for n in os.listdir(shards) if n.startswith("train-"))[0])
head = open(path, "rb").read(256)
W, L, V = struct.unpack_from("<III", head, 24)
rows = struct.unpack_from("<Q", head, 48)[0]
data_offset = struct.unpack_from("<Q", head, 96)[0]
data = np.fromfile(path, dtype={2: "<u2", 4: "<u4"}[W], count=rows * L, offset=data_offset).astype(np.int64).reshape(rows, L)
transformers.logging.set_verbosity_error()
torch.backends.cuda.matmul.allow_tf32 = True
cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_layer=dims[0], n_head=dims[1], n_embd=dims[2],
                              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
model = transformers.GPT2LMHeadModel(cfg).cuda().train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
def step(x):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
mode = "eager"
if comp:
    try:
        model = torch.compile(model)
        mode = "compiled"
    except Exception as e:
        print("torch.compile failed: %s" % e, file=sys.stderr)
rng = np.random.default_rng(0)
times = []
for s in range(steps):
    x = torch.as_tensor(data[rng.integers(0, rows, size=B), :T]).cuda(non_blocking=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    try:
        step(x)
    except Exception as e:
        if mode != "compiled" or s:
            raise
        print("torch.compile failed at its first step: %s" % e, file=sys.stderr)
        model = model._orig_mod
        mode = "eager"
        step(x)
    torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
tps = B * T / statistics.median(times[warm:])
N = sum(p.numel() for p in model.parameters()) - T * dims[2]  # tied wte once; less the position table
flops = 6 * N + 12 * dims[0] * dims[2] * T
print("%.0f %.4f %s" % (tps, tps * flops / (peak * 1e12) if peak > 0 else 0, mode))
EOF
    mem=$(poll_stop)
    if [ -s "$TMP/tout" ]; then
        set -- $(cat "$TMP/tout")
        echo "$1 $2 $mem $3"
    else
        echo "PyTorch failed:" >&2; tail -n 5 "$TMP/terr" >&2; echo "failed"
    fi
}

echo "| model | micro-batch | pile-trainer tokens/s | MFU | peak MiB | PyTorch tokens/s | MFU | peak MiB | PyTorch mode | ours / torch (tokens/s) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
for m in $MODELS; do
    B=${PILE_BENCH_BATCH:-$(plan_batch "$m")}
    o=$(ours "$m" "$B")
    # halve the batch until our run fits (the planner's GPU figures are not yet measured ones)
    while [ "$o" = failed ] && [ "$B" -gt 1 ] && [ -z "${PILE_BENCH_BATCH:-}" ]; do
        B=$((B / 2))
        echo "bench/train-gpu.sh: $m failed at the planned batch, trying $B" >&2
        o=$(ours "$m" "$B")
    done
    set -- $o
    peak=${4:-0}
    t=$(torch_run "$m" "$B" "$peak")
    awk -v m="$m" -v b="$B" -v o="$o" -v t="$t" 'BEGIN {
        no = split(o, a, " "); nt = split(t, c, " ")
        os = no >= 3 ? sprintf("%s | %.1f%% | %s", a[1], 100 * a[2], a[3]) : "failed | | "
        ts = nt >= 4 ? sprintf("%s | %.1f%% | %s | %s", c[1], 100 * c[2], c[3], c[4]) : "failed | | | "
        r = no >= 3 && nt >= 4 && c[1] > 0 ? sprintf("%.2fx", a[1] / c[1]) : "-"
        printf "| %s | %s | %s | %s | %s |\n", m, b, os, ts, r }'
done
echo
echo "MFU's peak: $(sed -n 's/.*\(against a peak of [0-9.]* TFLOP\/s ([^)]*)\).*/\1/p' "$TMP/err" 2>/dev/null | head -n 1)"
