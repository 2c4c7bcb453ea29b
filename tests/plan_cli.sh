#!/bin/sh
# pile-trainer plan on the command line: --help, refusals of bad values
# (exit 2, each named), the verdicts (fits: 0, does not fit: 3 with what
# would, not judged: 0), --json's keys, DeepSpeed's 235B setting, the CPU
# backend against --cpu-mem; and the trainer refusing a run that cannot fit
# before its first step, with the planner's numbers and the flag that
# overrides, alone and as two ranks on one host, on shards of the bundled
# sample (every run of trainer_cli.sh passes the same check and fits).
#   plan_cli.sh PILE_TRAINER PILE_PREP
# Speaks TAP; the trainer's part skips when the sample data is absent.
set -u
. "$(dirname "$0")/tap.sh"
TR=$(abs "$1")
PREP=$(abs "$2")
SRC=$(abs "${PILE_SOURCE_ROOT:-.}/data/sample")
tap_tmpdir plan-cli
cd "$TMP" || exit 1

run "$TR" plan --help
expect "plan --help lists --offload" 0 "--offload MODE"
check "plan --help lists --gpus, --zero, --gpu-mem, --cpu-mem" \
    sh -c 'grep -q -- "--gpus N" out && grep -q -- "--zero N" out && grep -q -- "--gpu-mem GIB" out && grep -q -- "--cpu-mem GIB" out' 
run "$TR" --help
expect "pile-trainer --help names the plan command" 0 "pile-trainer plan"

# --- bad values: exit 2, the value named
run "$TR" plan --gpus -1
expect "--gpus -1 refused" 2 "bad --gpus '-1'"
run "$TR" plan --gpus 8 --zero 4
expect "--zero 4 refused (0 to 3)" 2 "bad --zero '4' \(0 to 3\)"
run "$TR" plan --gpus 8 --zero 3 --offload param
expect "--offload param refused, the choices listed" 2 "unknown offload 'param' \(choices: none, optimizer, all\)"
run "$TR" plan --gpus 8 --zero 2 --offload all
expect "--offload all below ZeRO 3 refused" 2 "offload of the parameters needs ZeRO stage 3, not 2"
run "$TR" plan --gpus 8 --zero 0 --offload optimizer
expect "--offload optimizer without ZeRO refused" 2 "needs ZeRO stage 1, 2 or 3, not 0"
run "$TR" plan --gpus 8 --gpu-mem 0
expect "--gpu-mem 0 refused" 2 "bad --gpu-mem '0'"
run "$TR" plan --gpus 8 --cpu-mem lots
expect "--cpu-mem lots refused" 2 "bad --cpu-mem 'lots'"
run "$TR" plan --nodes 0
expect "--nodes 0 refused" 2 "bad --nodes '0'"
run "$TR" plan --gpus
expect "--gpus without a value refused" 2 "option '--gpus' needs a value"
run "$TR" plan --zero 2
expect "ZeRO without --gpus refused (the CPU backend is one process)" 2 "ZeRO, offload and nodes need --gpus"
run "$TR" plan --model gpt2 --n_embd 770
expect "n_embd not a multiple of n_head refused" 2 "n_embd 770.*n_head 12"
run "$TR" plan --model gpt3
expect "an unknown preset refused" 2 "gpt3"
run "$TR" plan --frobnicate 1
expect "an unknown option refused" 2 "unknown option '--frobnicate'"
run "$TR" plan --vocab_size 0
expect "--vocab_size 0 refused" 2 "bad --vocab-size '0'"

# --- verdicts
run "$TR" plan --model gpt2 --precision bf16 --gpus 8 --zero 2 --gpu-mem 80
expect "gpt2 on 8 x 80 GiB, ZeRO 2: fits (exit 0)" 0 "verdict: fits"
run "$TR" plan --model gpt2 --precision bf16 --gpus 1 --zero 0 --gpu-mem 4
expect "gpt2 on one 4 GiB GPU: does not fit (exit 3)" 3 "GPU: +DOES NOT FIT: needs .*, has 4.00 GiB"
check "... and says what would fit" grep -q -- "what would fit:" out
run "$TR" plan --model gpt2 --precision bf16 --gpus 8 --zero 2
expect "no --gpu-mem: not judged (exit 0)" 0 "verdict: not judged"
run "$TR" plan --model gpt2 --precision bf16 --gpus 8 --zero 3 --offload optimizer --gpu-mem 80 --json
expect "--json: one object with the planner's and DeepSpeed's figures" 0 '"model_states_gpu_bytes": [0-9]+'
for k in model_states_cpu_bytes deepspeed_gpu_bytes deepspeed_cpu_bytes total_gpu_bytes params \
    largest_layer_params; do
    check "--json has $k" grep -Eq "\"$k\": [0-9]+" out
done
check "--json: fits true" grep -Eq '"fits": true' out
check "--json: params 124439808" grep -Eq '"params": 124439808,' out
run "$TR" plan --model gpt2 --precision bf16 --gpus 8 --zero 2 --json
expect "--json, not judged: fits null" 0 '"fits": null'

# --- attention on one GPU: the CUDA backend's saved state per layer and the
# backward's D once, each fp32 [8, 12, 1024], and the other ops' scratch
# (trainer/cuda/cuda_sizes.h)
run "$TR" plan --model gpt2 --gpus 1 --batch_size 8 --max_length 1024 --json
expect "--gpus 1: attention's scratch is the CUDA backend's (393216 bytes)" 0 \
    '"gpu": \{[^}]*"attention": 4718592, [^}]*"attention_scratch": 393216,'
check "--gpus 1: the ops' scratch is the CUDA backend's (786432 bytes: layernorm_bwd's partials)" \
    grep -Eq '"gpu": \{[^}]*"op_scratch": 786432,' out
run "$TR" plan --model gpt2 --gpus 1 --batch_size 8 --max_length 1024
expect "--gpus 1, as text: the ops' scratch row" 0 "ops' scratch +768 KiB"

# --- precision: none given is what the backend defaults to
run "$TR" plan --model gpt2 --gpus 8 --zero 2 --json
expect "no precision, GPUs: planned in bf16 (a CUDA run's default)" 0 '"precision": "bf16"'
run "$TR" plan --model gpt2 --gpus 8 --zero 2 --precision fp32 --json
expect "--precision fp32 on GPUs stays fp32" 0 '"precision": "fp32"'
run "$TR" plan --model tiny --json
expect "no precision, the CPU backend: fp32" 0 '"precision": "fp32"'

# The setting users bring from DeepSpeed: 235B on 8 x A100 80 GB with 1 TB of
# RAM, ZeRO 3, parameters and optimizer offloaded to the CPU.
BIG="--n_layer 95 --n_head 112 --n_embd 14336 --max_length 2048 --batch_size 1 --precision bf16"
run "$TR" plan $BIG --recompute block --gpus 8 --zero 3 --offload all --gpu-mem 80 --cpu-mem 1024
expect "235B, ZeRO 3 offload all on 8 x 80 GiB, 1 TiB: does not fit (exit 3)" 3 "host: +DOES NOT FIT"
check "... the GPUs' part fits" grep -Eq "GPU: +fits" out
check "... DeepSpeed's estimator beside ours, the same per GPU" \
    grep -Eq "ours: +per GPU .*, the same" out
check "... more nodes would do" grep -Eq -- "--nodes [0-9]+" out

# ... and the same from the ds_config.json they bring
cat > ds.json <<'EOF2'
{"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": true},
 "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}}
EOF2
run "$TR" plan --n_layer 95 --n_head 112 --n_embd 14336 --max_length 2048 --deepspeed ds.json --gpus 8 --json
expect "--deepspeed ds_config.json: ZeRO 3, offload all, bf16, micro-batch 1" 0 \
    '"batch_size": 1, .*"precision": "bf16", .*"zero_stage": 3, "offload": "all"'
run "$TR" plan --model tiny --deepspeed ds.json --json
expect "... without --gpus, the CPU backend's plan leaves its ZeRO settings out" 0 '"zero_stage": 0, "offload": "none"'

# --- the CPU backend: judged against --cpu-mem (or MemAvailable)
run "$TR" plan --model tiny --batch_size 2 --max_length 64 --cpu-mem 0.01
expect "the CPU backend in 10 MiB: does not fit (exit 3)" 3 "memory: +DOES NOT FIT"
run "$TR" plan --model tiny --batch_size 2 --max_length 64 --cpu-mem 4 --json
expect "the CPU backend in 4 GiB: fits" 0 '"fits": true'
check "... its backend's bytes counted" grep -Eq '"backend_bytes": [0-9]+' out

# --- the trainer plans its run before step 1 and refuses one that cannot fit
if [ -f "$SRC/val.jsonl.zst" ] && [ -f "$SRC/train/00.jsonl.zst" ]; then
    if ! "$PREP" -q -o shards -L 64 "$SRC" > out 2> err; then
        echo "Bail out! pile-prep failed: $(cat err)"
        exit 1
    fi
    run "$TR" --data shards --checkpoint_dir C --n_layer 96 --n_head 128 --n_embd 16384 --max_steps 2
    expect "a 300B-parameter run is refused before it starts (exit 1)" 1 "the run does not fit in memory: it needs [0-9.]+ TiB"
    check "... naming the planner's rows and the override" \
        grep -Eq "parameters .*AdamW moments .*--skip_memory_check" err
    check "... before step 1: no metrics, no checkpoint" test ! -e C/metrics.jsonl -a ! -e C/latest
    check "... and no step reported" sh -c '! grep -q "step 1" out err'
    need=$(sed -n 's/.*it needs \([^,]*\), the host.*/\1/p' err)
    run "$TR" plan --data shards --n_layer 96 --n_head 128 --n_embd 16384
    expect "plan with the run's flags: the shards' vocabulary, the same figure ($need), exit 3" 3 \
        "DOES NOT FIT: needs $need,"
    # two ranks on this host (launch: LOCAL_WORLD_SIZE 2) hold two tables:
    # the sum is checked, each rank's figure (the one-rank run's) named
    run timeout 120 "$TR" launch --nproc 2 --data shards --checkpoint_dir C2 --n_layer 96 --n_head 128 \
        --n_embd 16384 --max_steps 2
    expect "launch --nproc 2: both ranks against the host, refused before step 1 (exit 1)" 1 \
        "rank 0: the run does not fit in memory: its 2 ranks on this host need [0-9.]+ TiB \($need each\)"
    check "... the total is twice one rank's" sh -c "sed -n 's/.*on this host need \([0-9.]*\) TiB (\([0-9.]*\) TiB each).*/\1 \2/p' '$TMP/err' |
        awk '{ d = \$1 - 2 * \$2; exit !(NF == 2 && d < 0.06 && d > -0.06) }'"
    check "... the other rank stops, naming rank 0" grep -q "rank 1: stopping: rank 0 of 2 failed" err
    check "... no checkpoint" test ! -e C2/latest
    run "$TR" --data shards --checkpoint_dir D --max_steps 1 --batch_size 2 --print-config --skip_memory_check
    expect "--skip_memory_check is a setting (--print-config)" 0 '"skip_memory_check": true'
else
    ok "the trainer's check # SKIP no sample data at $SRC"
fi

tap_done
