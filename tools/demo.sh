#!/usr/bin/env bash
# demo.sh: the main job end to end, from raw .jsonl.zst to verified shards and a small trained model.
#
#   tools/demo.sh [--data DIR] [--tokenizer SPEC] [--out DIR] [--fresh] [--no-deps]
#
#   --data DIR        a folder in The Pile's layout (train/*.jsonl.zst, val.jsonl.zst);
#                     default /workspace/pile_data/ when it exists, else data/sample/
#   --tokenizer SPEC  what pile-prep --tokenizer takes (gpt2, bytes, a tokenizer.json,
#                     a GPT-2 folder, a .tiktoken file); default: train an
#                     8192-token BPE on the train files into OUT/tokenizer.json
#   --out DIR         where everything goes (default out/ in the repository)
#   --fresh           remove OUT first (otherwise a rerun reuses OUT/tokenizer.json
#                     and pile-prep resumes or confirms the finished run)
#   --no-deps         do not run tools/install-deps.sh first
#
# Steps: install the Debian packages (no Python), build (release, in
# build-release/), [train the tokenizer], pile-prep, pile-dump (summary,
# --verify, --decode 0), pile-trainer (a tiny model for a few minutes, eval,
# sample).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=
TOKENIZER=
OUT=$ROOT/out
FRESH=0
DEPS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --tokenizer) TOKENIZER=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --no-deps) DEPS=0; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# paths given on the command line are relative to where the user stands
[ -z "$DATA" ] || DATA=$(realpath -m -- "$DATA")
OUT=$(realpath -m -- "$OUT")
if [ -n "$TOKENIZER" ] && [ -e "$TOKENIZER" ]; then TOKENIZER=$(realpath -- "$TOKENIZER"); fi
cd "$ROOT"

T0=$SECONDS
step() { echo; echo "== demo [$((SECONDS - T0))s] $*"; }
note() { echo "   $*"; }

if [ -z "$DATA" ]; then
  if [ -d /workspace/pile_data ]; then DATA=/workspace/pile_data; else DATA=data/sample; fi
fi
[ -d "$DATA" ] || { echo "demo.sh: no data folder '$DATA'" >&2; exit 2; }
mapfile -t TRAIN < <(find "$DATA/train" -maxdepth 1 -type f \( -name '*.jsonl' -o -name '*.jsonl.zst' \) 2>/dev/null | LC_ALL=C sort)
[ ${#TRAIN[@]} -gt 0 ] || { echo "demo.sh: no train/*.jsonl[.zst] in '$DATA'" >&2; exit 2; }

# ---------------------------------------------------------------- 1. deps
if [ $DEPS = 1 ]; then
  step "checking the Debian packages (tools/install-deps.sh --no-python)"
  tools/install-deps.sh --no-python
fi

# ---------------------------------------------------------------- 2. build
BUILD=build-release
step "building (release) in $BUILD/"
# (tools/test.sh compiles this folder too, with PTX-only device code: a
# run here takes the full device code back)
if [ -f "$BUILD/meson-private/coredata.dat" ]; then
  meson setup --reconfigure "$BUILD" --buildtype=release -Dwerror=false -Dgpu_code=all >/dev/null
else
  meson setup "$BUILD" --buildtype=release -Dwerror=false -Dgpu_code=all >/dev/null
fi
targets=(preprocess/pile-prep tools/pile-dump tools/pile-tok trainer/pile-trainer)
if ! ninja -C "$BUILD" "${targets[@]}" > "$BUILD/demo-build.log" 2>&1; then
  cat "$BUILD/demo-build.log" >&2
  echo "demo.sh: the build failed (above)" >&2
  exit 1
fi
note "built ${targets[*]}"
PREP=$BUILD/preprocess/pile-prep
DUMP=$BUILD/tools/pile-dump
TOK=$BUILD/tools/pile-tok
TRAINER=$BUILD/trainer/pile-trainer

[ $FRESH = 1 ] && rm -rf "$OUT"
mkdir -p "$OUT"
note "data: $DATA (${#TRAIN[@]} train files); output: $OUT/"

# ---------------------------------------------------------------- 3. tokenizer
if [ -z "$TOKENIZER" ]; then
  TOKENIZER=$OUT/tokenizer.json
  if [ -f "$TOKENIZER" ]; then
    step "tokenizer: reusing $TOKENIZER (--fresh trains a new one)"
  else
    tok_inputs=("${TRAIN[@]}")
    # A demo tokenizer needs megabytes, not the Pile: when the train files
    # pass 256 MB (compressed), learn from the first one only.
    train_bytes=$(du -cbL "${TRAIN[@]}" | tail -n 1 | cut -f1)
    [ "$train_bytes" -le $((256 << 20)) ] || tok_inputs=("${TRAIN[0]}")
    step "training an 8192-token BPE tokenizer on ${#tok_inputs[@]} file(s)"
    "$TOK" train --vocab-size 8192 --progress -o "$TOKENIZER" "${tok_inputs[@]}"
    "$TOK" info --tokenizer "$TOKENIZER"
  fi
else
  step "tokenizer: $TOKENIZER"
fi

# ---------------------------------------------------------------- 4. shards
step "pile-prep: tokenizing and packing $DATA into $OUT/shards"
"$PREP" --tokenizer "$TOKENIZER" -o "$OUT/shards" --progress "$DATA"

# ---------------------------------------------------------------- 5. inspect
step "pile-dump: summary of $OUT/shards"
"$DUMP" "$OUT/shards"

step "pile-dump --verify: every checksum and invariant"
# (it repeats the summary above before its verdict: show the verdict)
"$DUMP" --verify "$OUT/shards" > "$OUT/verify.txt"
grep -i 'verif' "$OUT/verify.txt" || tail -n 3 "$OUT/verify.txt"

step "pile-dump --decode 0: the first row, as ids and text (first lines)"
"$DUMP" --decode 0 --tokenizer "$TOKENIZER" "$OUT/shards" > "$OUT/row0.txt"
head -n 20 "$OUT/row0.txt" | cut -c1-200
note "(the whole row: $OUT/row0.txt)"

# ---------------------------------------------------------------- 6. train
# A demonstration, not a model: the `tiny` preset (2 layers, 64 wide) on
# 128-token windows of the shards' rows, 1500 steps of 16 rows on every core
# (about 3 minutes on two free cores; on the bundled sample that is an epoch,
# so epoch-001/ is written, and a little more), validating on 256 rows every
# 250 steps so the val loss is seen falling. A rerun resumes the finished
# run (and so only prints its summary); --fresh trains again.
CKPT=$OUT/checkpoints
TRAIN_ARGS=(--data "$OUT/shards" --checkpoint_dir "$CKPT" --model tiny --max_length 128
            --batch_size 16 --max_steps 1500 --learning_rate 3e-3 --warmup_ratio 0.02
            --eval_interval 250 --eval_rows 256 --log_interval 50)
if [ -e "$CKPT/latest" ]; then
  step "pile-trainer: resuming the run in $CKPT (--fresh trains again)"
  "$TRAINER" "${TRAIN_ARGS[@]}" --resume
else
  step "pile-trainer: a tiny GPT-2 on $OUT/shards, 1500 steps; checkpoints in $CKPT"
  "$TRAINER" "${TRAIN_ARGS[@]}"
fi
note "metrics: $CKPT/metrics.jsonl and a TensorBoard event file (tensorboard --logdir $CKPT)"

step "pile-trainer eval: the best checkpoint on the validation rows"
"$TRAINER" eval --checkpoint "$CKPT/best_model" --eval_rows 256

step "pile-trainer sample: 120 tokens from the best checkpoint"
"$TRAINER" sample --checkpoint "$CKPT/best_model" --prompt "The " --max_new_tokens 120 \
  --temperature 0.8 --top_k 40 --seed 1

step "done: shards in $OUT/shards, tokenizer $TOKENIZER, checkpoints in $CKPT"
