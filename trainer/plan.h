/* The memory planner: from a run's settings (model, micro-batch, precision,
 * recompute mode; GPUs, nodes, ZeRO stage, offload), what the run holds,
 * where, and whether it fits, before anything is allocated.
 * pile_plan_compute is a pure function from settings to a table (no I/O,
 * no allocation, thread-safe); `pile-trainer plan` prints it, and the
 * trainer checks its run with it before the first step
 * (pile_plan_check_run, which reads the host's available memory).
 *
 * Two kinds of run are described:
 *  - The CPU backend (gpus == 0): one process, fp32, exactly what
 *    model.c and optim.c allocate in the backend (tests/test_plan.c checks
 *    the plan against the backend's own count), plus the host's copies
 *    (batches, a checkpoint's moments) and an allowance for the program,
 *    its libraries and threads.
 *  - GPUs (gpus >= 1, `nodes` nodes of `gpus` each): the model states in
 *    DeepSpeed's accounting (16-bit parameters 2 bytes, 16-bit gradients
 *    2, fp32 gradients 4, fp32 master weights 4, AdamW moments 8, each
 *    kept whole or partitioned over the GPUs by the ZeRO stage, moved to
 *    the host by offload), so that for ZeRO 2 and 3 they equal what
 *    DeepSpeed's estimate_zero2/zero3_model_states_mem_needs return
 *    (tests/reference/plan_ref.py checks it against DeepSpeed itself);
 *    and the rest of a GPU run as the CUDA backend will lay it out: the
 *    activations model.c keeps for each recompute mode in the compute
 *    precision (LayerNorm statistics and attention's log-sum-exp in fp32),
 *    the fp32 logits, the backward's buffers, the ops' scratch
 *    (trainer/cuda/cuda_sizes.h, as the backend sizes it), ZeRO's buckets
 *    and gathers, and the CUDA runtime (an assumed figure: never measured
 *    here).
 *
 * Sizes are bytes, saturating at UINT64_MAX rather than wrapping. */
#ifndef PILE_PLAN_H
#define PILE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "model.h"
#include "pile_buf.h"
#include "pile_error.h"
#include "precision.h"
#include "train_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* DeepSpeed's offload settings: offload_optimizer (fp32 gradients, master
 * weights and moments in host memory; ZeRO 1 to 3) and, with it,
 * offload_param (the 16-bit parameters too; ZeRO 3 only). */
typedef enum pile_offload {
    PILE_OFFLOAD_NONE = 0,
    PILE_OFFLOAD_OPTIMIZER = 1,
    PILE_OFFLOAD_ALL = 2,
} pile_offload;

/* "none", "optimizer", "all": 0, or PILE_EINVAL naming the choices. */
int pile_plan_offload_parse(const char *name, pile_offload *out, pile_err *err);
const char *pile_plan_offload_name(pile_offload o);

/* DeepSpeed's default additional_buffer_factor for the host. */
#define PILE_PLAN_DS_BUFFER_FACTOR 1.5

typedef struct pile_plan_settings {
    /* the model, as pile_model_config names it */
    int n_layer, n_head, n_embd;
    int vocab_size;        /* real vocabulary; padded as the model pads (pile_model_padded_vocab) */
    int n_positions;       /* rows of the position table: the run's max_length */
    int dropout;           /* nonzero: dropout > 0 (the backward keeps a masked copy) */
    pile_recompute recompute;
    pile_precision precision; /* the CPU backend stores fp32 whatever this says (bf16 emulated, with
                                 fp32 master weights beside) */
    /* the micro-batch of one process (one GPU) */
    int batch_size, seq_len;
    int accumulation_steps; /* only for advice that keeps the global batch; 0 = not given */
    /* where */
    int gpus;              /* GPUs per node; 0 = the CPU backend */
    int nodes;             /* >= 1 */
    int zero_stage;        /* 0..3 (GPUs only) */
    pile_offload offload;  /* GPUs only; optimizer needs ZeRO >= 1, all needs ZeRO 3 */
    int threads;           /* the CPU backend's threads (the runtime's share is per thread) */
    /* the CPU backend: processes training together on this host (the
     * run's world size), each holding the table below; 0: one process,
     * and ZeRO and offload refused (the plan command's CPU plan). From 1
     * on, zero_stage 0 to 2 and offload optimizer are planned as optim.c
     * shards them (pile_optim_zero). */
    int ranks;
    /* of those, the ranks on this host (the launcher's local world size),
     * whose tables the host holds side by side: total_cpu is that many
     * times one process's. 0: all `ranks` (one host). */
    int local_ranks;
    /* the CPU backend the run uses (gpus == 0): attention's saved state and
     * scratch are its pile_backend_attention_saved_bytes / _scratch_bytes;
     * borrowed for the call only. NULL on GPUs (the CUDA backend's, from
     * trainer/cuda/cuda_sizes.h: one fp32 log-sum-exp per row and head
     * kept per layer, and the backward's D, as much, once). */
    const pile_backend *backend;
    /* what there is; 0 = unknown (fits is then not judged on that side) */
    uint64_t gpu_mem;      /* bytes per GPU */
    uint64_t cpu_mem;      /* bytes per node; for the CPU backend, what the process may use */
} pile_plan_settings;

/* The table's rows. Model states come first (through PILE_PLAN_HOST_SIZING). */
typedef enum pile_plan_row {
    PILE_PLAN_PARAMS,        /* parameters in the compute precision (fp32: also the master copy) */
    PILE_PLAN_GRADS16,       /* 16-bit gradients (mixed precision) */
    PILE_PLAN_GRADS32,       /* fp32 gradients */
    PILE_PLAN_MASTER,        /* fp32 master weights (mixed precision) */
    PILE_PLAN_MOMENTS,       /* AdamW's m and v, fp32 */
    PILE_PLAN_GATHERED,      /* ZeRO 3: the largest layer's 16-bit parameters and gradients, gathered */
    PILE_PLAN_HOST_SIZING,   /* host only: DeepSpeed's sizing beyond the exact states (its 1.5 x
                                buffer factor, fp32 copies of what each process loads) */
    PILE_PLAN_ACTIVATIONS,   /* kept for the backward, every layer (attention's saved state apart) */
    PILE_PLAN_RECOMPUTE,     /* gelu / block: one layer's set the backward refills */
    PILE_PLAN_ATTENTION,     /* attention's saved state, every layer: the backend's figure (the
                                CPU's and FlashAttention's: one fp32 log-sum-exp per row and head) */
    PILE_PLAN_EMBED,         /* the embedding's output and the final LayerNorm */
    PILE_PLAN_LOGITS,        /* the classifier's [N, Vp] buffer and the per-row losses */
    PILE_PLAN_BACKWARD,      /* the backward's activation gradients */
    PILE_PLAN_ATT_SCRATCH,   /* attention's work space, one for all layers (the CPU's per thread;
                                the CUDA backend's backward D, fp32 [B, NH, T]) */
    PILE_PLAN_OP_SCRATCH,    /* the other ops' work space, one for the run: the CUDA backend's
                                (its reductions' partial sums, embed_bwd's sort), taken with the
                                arena (pile_backend_reserve_scratch); none on the CPU */
    PILE_PLAN_BATCH,         /* tokens, targets, document starts: backend and host copies */
    PILE_PLAN_ZERO_BUFFERS,  /* ZeRO 2/3 reduce bucket; ZeRO 3 whole-block gathers beyond GATHERED;
                                on the host beside GPUs: the offloaded step's chunk staging */
    PILE_PLAN_CHECKPOINT,    /* the CPU backend: host copies of the moments while a checkpoint is written */
    PILE_PLAN_RUNTIME,       /* libraries, threads, BLAS buffers (CPU, an allowance) or the CUDA runtime
                                and cuBLASLt's workspace (GPU, assumed) */
    PILE_PLAN_ROWS
} pile_plan_row;

/* The key a row has in --json ("parameters", "gradients_16bit", ...). */
const char *pile_plan_row_key(pile_plan_row r);

/* One line of DeepSpeed's ..._all_cold table for the same model and
 * machines: an option set and what the estimator returns for it. */
typedef struct pile_plan_ds_option {
    int offload_optimizer, offload_param, zero_init; /* zero_init: -1 where the estimator has no such option */
    uint64_t cpu, gpu;  /* per node, per GPU */
} pile_plan_ds_option;

typedef struct pile_plan {
    uint64_t params;            /* as saved and as DeepSpeed counts them: the tied embedding once,
                                   the vocabulary's padding not included */
    uint64_t params_allocated;  /* the flat buffers' length (padding included) */
    uint64_t largest_layer_params; /* DeepSpeed's: the most parameters one module owns (its
                                      model_to_params on the Hugging Face GPT-2 model) */
    uint64_t block_params;      /* one transformer block */
    int vocab_padded;
    int world;                  /* gpus x nodes; 0 for the CPU backend */
    int act_bytes;              /* bytes of one stored activation: 4, or 2 on GPUs in bf16/fp16 */
    uint64_t layer_bytes[3];    /* one layer's kept activations per recompute mode (index pile_recompute),
                                   attention's saved state included */
    uint64_t shared_bytes[3];   /* the set refilled once for all layers per mode */
    uint64_t gpu[PILE_PLAN_ROWS]; /* per GPU */
    uint64_t cpu[PILE_PLAN_ROWS]; /* per node (host), or the CPU backend's process */
    uint64_t model_states_gpu;  /* rows PARAMS..GATHERED, per GPU */
    uint64_t model_states_cpu;  /* rows PARAMS..HOST_SIZING, per node */
    uint64_t host_states;       /* the states the host holds, exactly (HOST_SIZING not included) */
    uint64_t total_gpu, total_cpu;
    uint64_t process_cpu;       /* the CPU backend: one process's rows summed (total_cpu: the host's,
                                   every local rank's); 0 on GPUs */
    uint64_t backend_bytes;     /* the CPU backend: what pile_backend_bytes_in_use says once the model
                                   and the optimizer are created (0 on GPUs) */
    /* DeepSpeed's estimator for the same setting: ZeRO 1 and 2 take
     * estimate_zero2_model_states_mem_needs (its stage 1 and 2 code is one
     * file, and it has no stage-1 estimator), ZeRO 3
     * estimate_zero3_model_states_mem_needs with zero_init (the trainer
     * creates each rank's partition directly); none for ZeRO 0 and the CPU
     * backend. */
    const char *deepspeed_estimator; /* NULL when none applies */
    uint64_t deepspeed_gpu, deepspeed_cpu;
    pile_plan_ds_option ds_options[6]; /* the all_cold table */
    int n_ds_options;
    /* 1 fits, 0 does not, -1 not judged (that memory unknown) */
    int fits_gpu, fits_cpu;
    int fits;                   /* both sides that were judged fit (1), one does not (0), none judged (-1) */
    int close;                  /* fits, but a judged side is above 90% of its memory */
} pile_plan;

/* Plans the settings. PILE_EINVAL, naming the setting, for a model or batch
 * the trainer would refuse, or an impossible combination (offload without
 * ZeRO, offload all below ZeRO 3). */
int pile_plan_compute(const pile_plan_settings *s, pile_plan *out, pile_err *err);

/* The counts of DeepSpeed 0.19.8's estimators, with its arithmetic (its
 * int() truncations and float products), so that the bytes are the same:
 * per node (cpu) and per GPU (gpu). */
void pile_plan_deepspeed_zero2(uint64_t total_params, int gpus_per_node, int nodes, int cpu_offload,
                               double buffer_factor, uint64_t *cpu, uint64_t *gpu);
void pile_plan_deepspeed_zero3(uint64_t total_params, uint64_t largest_layer_params, int gpus_per_node, int nodes,
                               int cpu_offload, int cpu_offload_params, int zero_init, double buffer_factor,
                               uint64_t *cpu, uint64_t *gpu);

/* A change of settings that fits where the given one does not. */
typedef struct pile_plan_option {
    char flags[128];   /* the flags that change, e.g. "--recompute block --nodes 7" */
    pile_plan_settings settings;
    unsigned changes;  /* which kinds of setting change (a bit each); for ordering */
    uint64_t total_gpu, total_cpu;
} pile_plan_option;

/* Up to max options that fit where s does not, the fewest kinds of change
 * first (recompute mode, ZeRO stage, offload, a halved micro-batch with the
 * accumulation doubled, more nodes of the same machines, and their
 * combinations), an option that only adds to one already given left out.
 * 0 when s fits, when fits is not judged, or when nothing in reach (up to
 * 4096 nodes) does. */
int pile_plan_advise(const pile_plan_settings *s, pile_plan_option *out, int max);

/* The table as text for a person (the rows per GPU and per node, the
 * activations of each recompute mode, DeepSpeed's figures beside ours,
 * whether it fits and the options), appended to out. `limit_source` names
 * where the memory figures came from ("--cpu-mem", "MemAvailable"), or
 * NULL. 0 or PILE_ENOMEM. */
int pile_plan_format(const pile_plan_settings *s, const pile_plan *p, const char *limit_source, pile_buf *out);
/* The same as one JSON object (keys in tests/reference/plan_ref.py and the
 * README): params, largest_layer_params, model_states_gpu_bytes,
 * model_states_cpu_bytes, deepspeed_gpu_bytes, deepspeed_cpu_bytes (null
 * where no estimator applies), total_gpu_bytes, total_cpu_bytes, fits
 * (null when not judged), the rows, the per-layer activations, DeepSpeed's
 * option table and the options. 0 or PILE_ENOMEM. */
int pile_plan_to_json(const pile_plan_settings *s, const pile_plan *p, pile_buf *out);

/* The settings of a training run: the model (preset and --n_layer/
 * --n_head/--n_embd), batch_size, accumulation_steps, precision, recompute
 * and the ds_config's zero_stage / offload_optimizer from c; the
 * vocabulary and max_length given (the shards' on a run). gpus 0, one
 * node, memory unknown. PILE_EINVAL naming what is wrong. */
int pile_plan_settings_from_config(const pile_train_config *c, int vocab_size, int max_length,
                                   pile_plan_settings *out, pile_err *err);

/* What this process may still use of the host's memory: /proc/meminfo's
 * MemAvailable, less when a cgroup (v2 memory.max) leaves less. 0 when
 * neither can be read. *source names which one it was ("MemAvailable",
 * "cgroup memory.max"). Reads files; thread-safe. */
uint64_t pile_plan_host_available(const char **source);

/* The trainer's check before its first step: plans the run (CPU backend
 * be, model mc, micro-batch of c's batch_size x T, c's world_size ranks
 * for ZeRO's shards, local_ranks of them on this host) against what the
 * host has now: pile_plan_check_host with cpu_mem from
 * pile_plan_host_available. 0 when it fits, when the memory cannot be
 * read, on a device backend or with skip_memory_check. One process of the
 * host calls it while no rank has allocated its model: the others' share
 * is already counted. */
int pile_plan_check_run(const pile_train_config *c, const pile_model_config *mc, const pile_backend *be, int T,
                        int local_ranks, pile_err *err);

/* The host side of a CPU plan: s planned against s->cpu_mem (0: not
 * judged, 0 returned), which came from `source` ("MemAvailable"). 0 when
 * it fits; PILE_ELIMIT when it does not, the message naming the total
 * (with several ranks on the host: one rank's figure, the number of ranks
 * and their sum), what is available, the largest rows and the flag that
 * runs it anyway. Another error of pile_plan_compute as it is. */
int pile_plan_check_host(const pile_plan_settings *s, const char *source, pile_err *err);

/* A device backend's memory for the run (be's pile_backend_reserve),
 * taken before the model is made: the plan of one GPU holding the whole
 * model (c's batch_size x T), less the CUDA context and cuBLASLt's
 * workspace, which are not the backend's to hand out; then the ops'
 * scratch from it (pile_backend_reserve_scratch: the plan's op_scratch
 * row). With skip_memory_check only the scratch, on its own. Nothing to
 * do on the CPU backend. 0; PILE_ELIMIT when the device has not that much,
 * naming the planned total, its largest rows and what to change; another
 * error of the backend as it is. */
int pile_plan_reserve(const pile_train_config *c, const pile_model_config *mc, pile_backend *be, int T,
                      pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
