#!/usr/bin/env python3
"""The memory planner's model states (pile-trainer plan --json) against
DeepSpeed's own estimators (TAP).

  plan_ref.py PILE_TRAINER

Over a table of model sizes (GPT-2 124M, medium, XL, a 235B-parameter
model, an odd small one), GPUs per node (1, 8), nodes (1, 2, 3), ZeRO
stages 2 and 3 and every offload the stage allows (none, optimizer; all
for ZeRO 3), the plan's deepspeed_gpu_bytes / deepspeed_cpu_bytes and its
own model_states_gpu_bytes / model_states_cpu_bytes must equal, byte for
byte, what deepspeed.runtime.zero.stage_1_and_2.
estimate_zero2_model_states_mem_needs and deepspeed.runtime.zero.stage3.
estimate_zero3_model_states_mem_needs return for the plan's params and
largest_layer_params (ZeRO 3 with zero_init, as the trainer creates each
rank's partition directly; additional_buffer_factor 1.5, the default).
DeepSpeed's GPU figures are integers (int(18 * P / G) and the like); its
host figures are float products (x 1.5, x 1 / nodes) truncated by int():
the planner repeats those operations in IEEE doubles in the same order, so
those are compared exactly too (three nodes make 1 / nodes inexact).

The counts themselves: for models small enough to build, params and
largest_layer_params must equal DeepSpeed's stage3.model_to_params on
transformers' GPT2LMHeadModel of the same shape (the tied lm_head counted
once, the largest module's own parameters); the plan of larger ones uses
the same formula.

DeepSpeed runs on the CPU here (DS_ACCELERATOR=cpu), installed with
--no-deps (tools/install-deps.sh). Exits 77 (skip) when it cannot be
imported, or is not the version whose formulas plan.c follows.
"""
import json
import sys

from reftap import done, main_of, need_deepspeed, report, run

DS_VERSION = "0.19.8"  # the formulas plan.c follows; tools/install-deps.sh pins it

need_deepspeed(DS_VERSION, "plan.c")
import torch  # noqa: E402  (after need_deepspeed: it skips without them)
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs  # noqa: E402
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs, model_to_params  # noqa: E402

if len(sys.argv) != 2:
    sys.exit("usage: plan_ref.py PILE_TRAINER")
TRAINER = sys.argv[1]

# name, flags, built with transformers for model_to_params
MODELS = [
    ("gpt2 124M", ["--model", "gpt2"], True),
    ("odd small (7 layers, 5 heads, 320 wide, vocabulary 1000, 77 positions)",
     ["--n_layer", "7", "--n_head", "5", "--n_embd", "320", "--vocab_size", "1000", "--max_length", "77"], True),
    ("gpt2-medium", ["--model", "gpt2-medium"], False),
    ("gpt2-xl", ["--model", "gpt2-xl", "--max_length", "2048"], False),
    ("235B (95 layers, 112 heads, 14336 wide)",
     ["--n_layer", "95", "--n_head", "112", "--n_embd", "14336", "--max_length", "2048"], False),
]
MACHINES = [(1, 1), (8, 1), (8, 2), (8, 3), (1, 2)]
SETTINGS = [(2, "none"), (2, "optimizer"), (3, "none"), (3, "optimizer"), (3, "all")]


def plan(flags):
    return json.loads(run([TRAINER, "plan", "--json", "--precision", "bf16", "--batch_size", "1"] + flags))


def deepspeed_says(stage, offload, params, largest, gpus, nodes):
    if stage == 2:
        cpu, gpu = estimate_zero2_model_states_mem_needs(
            total_params=params, num_gpus_per_node=gpus, num_nodes=nodes,
            cpu_offload=offload != "none", additional_buffer_factor=1.5)
    else:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=params, largest_layer_params=largest, num_gpus_per_node=gpus, num_nodes=nodes,
            cpu_offload=offload != "none", cpu_offload_params=offload == "all", zero_init=True,
            additional_buffer_factor=1.5)
    return cpu, gpu


def hf_counts(p):
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=p["vocab_size"], n_positions=p["n_positions"], n_embd=p["n_embd"],
                     n_layer=p["n_layer"], n_head=p["n_head"], bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return model_to_params(GPT2LMHeadModel(cfg))


def main():
    for name, flags, build in MODELS:
        base = plan(flags + ["--gpus", "8", "--zero", "3"])
        if build:
            try:
                total, largest = hf_counts(base)
            except ImportError as e:
                report(True, "%s: counts # SKIP transformers: %s" % (name, e))
            else:
                report(total == base["params"] and largest == base["largest_layer_params"],
                       "%s: params and largest_layer_params are model_to_params' on GPT2LMHeadModel" % name,
                       "plan %d / %d, DeepSpeed %d / %d" % (base["params"], base["largest_layer_params"], total,
                                                             largest))
        bad = []
        rows = 0
        for gpus, nodes in MACHINES:
            for stage, offload in SETTINGS:
                p = plan(flags + ["--gpus", str(gpus), "--nodes", str(nodes), "--zero", str(stage),
                                  "--offload", offload])
                cpu, gpu = deepspeed_says(stage, offload, p["params"], p["largest_layer_params"], gpus, nodes)
                got = (p["deepspeed_cpu_bytes"], p["deepspeed_gpu_bytes"], p["model_states_cpu_bytes"],
                       p["model_states_gpu_bytes"])
                rows += 1
                if got != (cpu, gpu, cpu, gpu):
                    bad.append("%d x %d, ZeRO %d, offload %s: plan (ds cpu, ds gpu, states cpu, states gpu) %s,"
                               " DeepSpeed cpu %d gpu %d" % (gpus, nodes, stage, offload, got, cpu, gpu))
        report(not bad, "%s: %d settings, model states equal DeepSpeed's estimators byte for byte" % (name, rows),
               *bad[:5])
    return done()


if __name__ == "__main__":
    main_of(main, "pile-trainer plan")
