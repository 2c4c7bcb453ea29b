/* Tests of pile-trainer's configuration (defaults, JSON configs with
 * Hugging Face names, DeepSpeed ds_config.json, flags, to_json round trip,
 * checks) and of the shard data loader (samples against the rows, epoch
 * orders, the held-out split, refusals), on shards written here with the
 * shard writer and on real pile-prep output from the bundled sample. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pile_prep.h"
#include "pile_shards.h"
#include "pile_test.h"
#include "train_config.h"
#include "train_data.h"

static char tmp[512];

/* Writes text to tmp/name; returns the path (static storage, one of four). */
static const char *write_file(const char *name, const char *text)
{
    static char paths[4][600];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 600, "%s/%s", tmp, name);
    FILE *f = fopen(p, "wb");
    if (!f) return p;
    fputs(text, f);
    fclose(f);
    return p;
}

static int has(const pile_buf *b, const char *s)
{
    return b->data && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

static void test_defaults(void)
{
    TEST("defaults");
    pile_train_config c;
    pile_err err;
    pile_train_config_defaults(&c);
    ASSERT_STR_EQ(c.model, "tiny");
    ASSERT_STR_EQ(c.data, "./shards");
    ASSERT_STR_EQ(c.checkpoint_dir, "./checkpoints");
    ASSERT_STR_EQ(c.backend, "auto"); /* issue 8: cuda when usable, else cpu */
    ASSERT_EQ(c.batch_size, 8);
    ASSERT_EQ(c.accumulation_steps, 1);
    ASSERT(c.learning_rate == 6e-4);
    ASSERT(c.min_lr == -1);
    ASSERT_EQ(c.epochs, 1);
    ASSERT(c.warmup_ratio == 0);
    ASSERT_EQ(c.warmup_steps, 0);
    ASSERT(c.weight_decay == 0.01);
    ASSERT(c.adam_beta1 == 0.9 && c.adam_beta2 == 0.999 && c.adam_epsilon == 1e-8);
    ASSERT(c.gradient_clipping == 1.0);
    ASSERT_EQ(c.seed, 42);
    ASSERT_EQ(c.eval_interval, 0);
    ASSERT_EQ(c.eval_rows, 0);
    ASSERT(c.val_fraction == 0.01);
    ASSERT(c.dist_timeout == 600);
    ASSERT_EQ(c.log_interval, 1);
    ASSERT_EQ(c.save_interval, 0);
    ASSERT_EQ(c.threads, 0);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP32);
    ASSERT_EQ(c.world_size, 1);
    ASSERT_EQ(c.zero_stage, 0);
    ASSERT(c.loss_scale == 0);
    ASSERT_EQ(c.initial_scale_power, 16);
    ASSERT_EQ(c.loss_scale_window, 1000);
    ASSERT_EQ(c.hysteresis, 2);
    ASSERT(c.min_loss_scale == 1);
    ASSERT_EQ(pile_train_config_check(&c, &err), 0);
}

static void test_json(void)
{
    TEST("JSON config: values, unknown keys warned");
    pile_train_config c;
    pile_err err;
    pile_buf w = {0};
    pile_train_config_defaults(&c);
    const char *p = write_file("cfg.json", "{\"batch_size\": 4, \"learning_rate\": 1e-3, \"doc_mask\": true,\n"
                                           " \"model\": \"small\", \"dropout\": 0.1, \"precision\": \"bf16\",\n"
                                           " \"seed\": 7, \"max_steps\": 100, \"foo\": 1, \"lr_scheduler_type\": \"x\"}");
    OK(pile_train_config_load_json(&c, p, &w, &err), &err);
    ASSERT_EQ(c.batch_size, 4);
    ASSERT(c.learning_rate == 1e-3);
    ASSERT_EQ(c.doc_mask, 1);
    ASSERT_STR_EQ(c.model, "small");
    ASSERT(c.dropout == 0.1f);
    ASSERT_EQ(c.precision, PILE_PRECISION_BF16);
    ASSERT_EQ(c.seed, 7);
    ASSERT_EQ(c.max_steps, 100);
    ASSERT_EQ(c.accumulation_steps, 1);
    char want[700];
    snprintf(want, sizeof want, "'%s': unknown key 'foo' ignored\n", p);
    ASSERT(has(&w, want));
    ASSERT(has(&w, "unknown key 'lr_scheduler_type' ignored"));
    pile_buf_free(&w);

    TEST("JSON config: a wrong type is refused naming file and key, nothing applied");
    pile_train_config before = c;
    p = write_file("bad.json", "{\"epochs\": 3, \"batch_size\": \"x\"}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': 'batch_size' must be an integer", p);
    ASSERT_STR_EQ(err.msg, want);
    ASSERT_EQ(c.epochs, before.epochs);
    p = write_file("bad.json", "{\"batch_size\": 2.5}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'batch_size' must be an integer") != NULL);
    p = write_file("bad.json", "{\"batch_size\": 0}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'batch_size' must be a positive integer, not 0") != NULL);
    p = write_file("bad.json", "{\"learning_rate\": \"fast\"}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'learning_rate' must be a number") != NULL);
    p = write_file("bad.json", "{\"doc_mask\": 1}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'doc_mask' must be true or false") != NULL);
    p = write_file("bad.json", "{\"precision\": \"fp8\"}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    p = write_file("bad.json", "[1, 2]");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    p = write_file("bad.json", "{\"batch_size\": ");
    ASSERT(pile_train_config_load_json(&c, p, &w, &err) < 0);
    ASSERT(pile_train_config_load_json(&c, "/nonexistent/cfg.json", &w, &err) < 0);
    ASSERT_EQ(c.batch_size, before.batch_size);
    ASSERT_EQ(w.len, 0);

    TEST("JSON config: Hugging Face TrainingArguments names");
    pile_train_config_defaults(&c);
    p = write_file("hf.json", "{\"per_device_train_batch_size\": 16, \"gradient_accumulation_steps\": 3,\n"
                              " \"num_train_epochs\": 2, \"max_grad_norm\": 0.5, \"output_dir\": \"out\",\n"
                              " \"eval_steps\": 10, \"save_steps\": 20, \"logging_steps\": 5}");
    OK(pile_train_config_load_json(&c, p, &w, &err), &err);
    ASSERT_EQ(c.batch_size, 16);
    ASSERT_EQ(c.accumulation_steps, 3);
    ASSERT_EQ(c.epochs, 2);
    ASSERT(c.gradient_clipping == 0.5);
    ASSERT_STR_EQ(c.checkpoint_dir, "out");
    ASSERT_EQ(c.eval_interval, 10);
    ASSERT_EQ(c.save_interval, 20);
    ASSERT_EQ(c.log_interval, 5);
    ASSERT_EQ(w.len, 0);

    TEST("JSON config: max_steps -1 (HF's saved default) is no limit; two keys for one field refused");
    p = write_file("hf_saved.json", "{\"max_steps\": -1, \"per_device_train_batch_size\": 2}");
    c.max_steps = 50;
    OK(pile_train_config_load_json(&c, p, &w, &err), &err);
    ASSERT_EQ(c.max_steps, 0);
    ASSERT_EQ(c.batch_size, 2);
    p = write_file("bad.json", "{\"max_steps\": -2}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'max_steps' must be a non-negative integer (or -1: no limit), not -2") != NULL);
    before = c;
    p = write_file("bad.json", "{\"epochs\": 5, \"batch_size\": 4, \"per_device_train_batch_size\": 8}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': 'batch_size' and 'per_device_train_batch_size' both set batch_size; keep one", p);
    ASSERT_STR_EQ(err.msg, want);
    ASSERT_EQ(c.batch_size, before.batch_size);
    ASSERT_EQ(c.epochs, before.epochs);
    p = write_file("bad.json", "{\"save_steps\": 5, \"save_interval\": 5}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'save_steps' and 'save_interval' both set save_interval") != NULL);
    p = write_file("bad.json", "{\"seed\": 1, \"seed\": 2}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'seed' is given twice; keep one") != NULL);
    ASSERT_EQ(w.len, 0);
    pile_buf_free(&w);
}

static void test_deepspeed(void)
{
    pile_train_config c;
    pile_err err;
    pile_buf w = {0};
    char want[800];

    TEST("DeepSpeed: \"auto\" leaves values, micro and accumulation read");
    pile_train_config_defaults(&c);
    const char *p = write_file("ds.json",
                               "{\"train_batch_size\": \"auto\", \"train_micro_batch_size_per_gpu\": 4,\n"
                               " \"gradient_accumulation_steps\": 2, \"gradient_clipping\": \"auto\",\n"
                               " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\",\n"
                               "   \"betas\": [0.8, 0.95], \"eps\": 1e-6, \"weight_decay\": \"auto\"}},\n"
                               " \"steps_per_print\": 10, \"seed\": 1234}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT_EQ(c.batch_size, 4);
    ASSERT_EQ(c.accumulation_steps, 2);
    ASSERT(c.gradient_clipping == 1.0);
    ASSERT(c.learning_rate == 6e-4);
    ASSERT(c.weight_decay == 0.01);
    ASSERT(c.adam_beta1 == 0.8 && c.adam_beta2 == 0.95 && c.adam_epsilon == 1e-6);
    ASSERT_EQ(c.log_interval, 10);
    ASSERT_EQ(c.seed, 1234);
    ASSERT_EQ(w.len, 0);

    TEST("DeepSpeed: train_batch_size checked and derived");
    pile_train_config_defaults(&c);
    p = write_file("ds.json", "{\"train_batch_size\": 16, \"train_micro_batch_size_per_gpu\": 4,"
                              " \"gradient_accumulation_steps\": 2}");
    ASSERT_EQ(pile_train_config_load_deepspeed(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "train_batch_size 16") && strstr(err.msg, "train_micro_batch_size_per_gpu 4") &&
           strstr(err.msg, "gradient_accumulation_steps 2") && strstr(err.msg, "world_size 1"));
    ASSERT_EQ(c.batch_size, 8); /* nothing applied */
    p = write_file("ds.json", "{\"train_batch_size\": 32, \"train_micro_batch_size_per_gpu\": 4,"
                              " \"gradient_accumulation_steps\": \"auto\"}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT_EQ(c.batch_size, 4);
    ASSERT_EQ(c.accumulation_steps, 8);
    pile_train_config_defaults(&c);
    p = write_file("ds.json", "{\"train_batch_size\": 24, \"gradient_accumulation_steps\": 3}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT_EQ(c.batch_size, 8);
    ASSERT_EQ(c.accumulation_steps, 3);
    p = write_file("ds.json", "{\"train_batch_size\": 30, \"train_micro_batch_size_per_gpu\": 4}");
    ASSERT_EQ(pile_train_config_load_deepspeed(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "not a multiple") != NULL);
    p = write_file("ds.json", "{\"train_micro_batch_size_per_gpu\": \"four\"}");
    ASSERT_EQ(pile_train_config_load_deepspeed(&c, p, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': 'train_micro_batch_size_per_gpu' must be an integer", p);
    ASSERT_STR_EQ(err.msg, want);
    ASSERT_EQ(w.len, 0);

    TEST("DeepSpeed: fp16 block read, no warning on the cpu backend (it emulates fp16)");
    pile_train_config_defaults(&c);
    p = write_file("ds.json", "{\"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 12,\n"
                              " \"loss_scale_window\": 500, \"hysteresis\": 3, \"min_loss_scale\": 0.5,"
                              " \"consecutive_hysteresis\": true}}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP16);
    ASSERT(c.loss_scale == 0);
    ASSERT_EQ(c.initial_scale_power, 12);
    ASSERT_EQ(c.loss_scale_window, 500);
    ASSERT_EQ(c.hysteresis, 3);
    ASSERT(c.min_loss_scale == 0.5);
    ASSERT(!has(&w, "fp16"));
    ASSERT_EQ(c.consecutive_hysteresis, 1);
    ASSERT(!has(&w, "consecutive_hysteresis"));
    w.len = 0;
    pile_train_config_defaults(&c);
    p = write_file("ds.json", "{\"fp16\": {\"enabled\": false, \"initial_scale_power\": 8}, \"bf16\": {\"enabled\": \"auto\"}}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP32);
    ASSERT_EQ(c.initial_scale_power, 8);
    ASSERT(!has(&w, "cpu backend"));
    p = write_file("ds.json", "{\"fp16\": {\"enabled\": true}, \"bf16\": {\"enabled\": true}}");
    ASSERT_EQ(pile_train_config_load_deepspeed(&c, p, &w, &err), PILE_EINVAL);
    w.len = 0;

    TEST("DeepSpeed: ZeRO, offload, optimizer, scheduler, unknown keys");
    pile_train_config_defaults(&c);
    p = write_file("ds.json",
                   "{\"zero_optimization\": {\"stage\": 2, \"overlap_comm\": false, \"contiguous_gradients\": true,\n"
                   "   \"offload_optimizer\": {\"device\": \"cpu\", \"pin_memory\": true}},\n"
                   " \"optimizer\": {\"type\": \"Lamb\", \"params\": {\"lr\": 0.002, \"max_coeff\": 0.3}},\n"
                   " \"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {\"warmup_num_steps\": 100,\n"
                   "   \"total_num_steps\": 1000, \"cos_min_ratio\": 0.1}},\n"
                   " \"activation_checkpointing\": {\"partition_activations\": true}, \"wall_clock_breakdown\": false}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT_EQ(c.zero_stage, 2);
    ASSERT_EQ(c.offload_optimizer, 1);
    ASSERT_EQ(c.offload_param, 0);
    ASSERT(c.learning_rate == 0.002);
    ASSERT_EQ(c.warmup_steps, 100);
    ASSERT_EQ(c.max_steps, 1000);
    ASSERT(c.min_lr > 0.00019999 && c.min_lr < 0.00020001);
    snprintf(want, sizeof want, "'%s': ZeRO stage 2 has no effect with one process", p);
    ASSERT(has(&w, want));
    snprintf(want, sizeof want, "'%s': key 'activation_checkpointing' not supported, ignored", p);
    ASSERT(has(&w, want));
    ASSERT(has(&w, "key 'wall_clock_breakdown' not supported"));
    ASSERT(has(&w, "key 'zero_optimization.contiguous_gradients' not supported"));
    ASSERT_EQ(c.overlap_comm, 0); /* taken: the collectives then block */
    ASSERT(!has(&w, "overlap_comm"));
    ASSERT(!has(&w, "offload_optimizer to")); /* the cpu is where it goes */
    ASSERT(has(&w, "optimizer 'Lamb' not supported; using AdamW"));
    ASSERT(has(&w, "key 'optimizer.params.max_coeff' not supported"));
    w.len = 0;
    pile_train_config_defaults(&c);
    p = write_file("ds.json", "{\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\": 0,"
                              " \"warmup_max_lr\": 0.001, \"warmup_num_steps\": \"auto\"}}}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT(c.learning_rate == 0.001);
    ASSERT(c.min_lr == 0);
    ASSERT_EQ(c.warmup_steps, 0);
    ASSERT(has(&w, "decays linearly"));

    TEST("DeepSpeed: reduce_bucket_size as DeepSpeed writes it (5e8), offload to nvme warned and not taken");
    pile_train_config_defaults(&c);
    ASSERT_EQ(c.reduce_bucket_size, 500000000);
    ASSERT_EQ(c.stage3_prefetch_bucket_size, 50000000);
    ASSERT_EQ(c.overlap_comm, 0); /* collectives block unless told to overlap */
    p = write_file("ds.json", "{\"zero_optimization\": {\"stage\": 3, \"reduce_bucket_size\": 2e5,\n"
                              "   \"stage3_prefetch_bucket_size\": 1000, \"stage3_param_persistence_threshold\": 10,\n"
                              "   \"offload_optimizer\": {\"device\": \"nvme\"}}}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT_EQ(c.zero_stage, 3);
    ASSERT_EQ(c.reduce_bucket_size, 200000);
    ASSERT_EQ(c.stage3_prefetch_bucket_size, 1000);
    ASSERT_EQ(c.offload_optimizer, 0);
    ASSERT(has(&w, "offload_optimizer to 'nvme' not supported, ignored"));
    ASSERT(has(&w, "key 'zero_optimization.stage3_param_persistence_threshold' not supported"));
    ASSERT(!has(&w, "stage3_prefetch_bucket_size"));
    ASSERT(!has(&w, "reduce_bucket_size"));
    w.len = 0;

    TEST("flags: --zero N and --offload MODE");
    pile_train_config_defaults(&c);
    {
        char *argv[] = {"x", "--zero", "2", "--offload", "optimizer", "--reduce-bucket-size=1000"};
        ASSERT_EQ(pile_train_config_parse_args(&c, 6, argv, 1, &err), 6);
        ASSERT_EQ(c.zero_stage, 2);
        ASSERT_EQ(c.offload_optimizer, 1);
        ASSERT_EQ(c.offload_param, 0);
        ASSERT_EQ(c.reduce_bucket_size, 1000);
        char *all[] = {"x", "--offload=all"};
        ASSERT_EQ(pile_train_config_parse_args(&c, 2, all, 1, &err), 2);
        ASSERT(c.offload_optimizer && c.offload_param);
        char *none[] = {"x", "--offload", "none"};
        ASSERT_EQ(pile_train_config_parse_args(&c, 3, none, 1, &err), 3);
        ASSERT(!c.offload_optimizer && !c.offload_param);
        char *bad[] = {"x", "--offload", "gpu"};
        ASSERT_EQ(pile_train_config_parse_args(&c, 3, bad, 1, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "unknown offload 'gpu' (choices: none, optimizer, all)") != NULL);
    }

    TEST("flags: --dist_timeout SECONDS, the ranks' deadline");
    pile_train_config_defaults(&c);
    {
        char *argv[] = {"x", "--dist_timeout", "30.5"};
        ASSERT_EQ(pile_train_config_parse_args(&c, 3, argv, 1, &err), 3);
        ASSERT(c.dist_timeout == 30.5);
        OK(pile_train_config_check(&c, &err), &err);
    }

    TEST("DeepSpeed: warmup_max_lr is the peak whatever the key order");
    /* DeepSpeed's WarmupLR and WarmupDecayLR set the optimizer's rate themselves */
    pile_train_config_defaults(&c);
    p = write_file("ds.json", "{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_max_lr\": 0.001}},\n"
                              " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}}}");
    OK(pile_train_config_load_deepspeed(&c, p, &w, &err), &err);
    ASSERT(c.learning_rate == 0.001);
    w.len = 0;

    TEST("DeepSpeed: a derived accumulation past an int refused naming the file");
    pile_train_config_defaults(&c);
    p = write_file("ds.json", "{\"train_batch_size\": 4294967296, \"train_micro_batch_size_per_gpu\": 1}");
    ASSERT_EQ(pile_train_config_load_deepspeed(&c, p, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': train_batch_size 4294967296 is too large", p);
    ASSERT_STR_EQ(err.msg, want);
    ASSERT_EQ(c.accumulation_steps, 1);
    pile_buf_free(&w);
}

static void test_flags(void)
{
    pile_train_config c;
    pile_err err;
    pile_buf w = {0};

    TEST("flags: both spellings, booleans, unknown returned, bad values named");
    pile_train_config_defaults(&c);
    char *argv1[] = {"train", "--batch-size", "3", "--learning_rate=0.01", "--doc-mask", "--resume",
                     "--model", "small", "--seed=18446744073709551615", "--precision", "fp16",
                     "--per-device-train-batch-size", "5", "--no-doc-mask", "--dropout", "0.25", "extra", "--epochs",
                     "9"};
    int argc1 = (int)(sizeof argv1 / sizeof argv1[0]);
    ASSERT_EQ(pile_train_config_parse_args(&c, argc1, argv1, 1, &err), 16);
    ASSERT_EQ(c.batch_size, 5);
    ASSERT(c.learning_rate == 0.01);
    ASSERT_EQ(c.doc_mask, 0);
    ASSERT_EQ(c.resume, 1);
    ASSERT_STR_EQ(c.model, "small");
    ASSERT(c.seed == UINT64_MAX);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP16);
    ASSERT(c.dropout == 0.25f);
    ASSERT_EQ(c.epochs, 1);
    char *argv2[] = {"--batch_size", "x"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 2, argv2, 0, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--batch_size: 'x' is not a positive integer");
    char *argv3[] = {"--batch-size=0"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 1, argv3, 0, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--batch-size: '0' is not a positive integer");
    char *argv4[] = {"--epochs"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 1, argv4, 0, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "--epochs needs a value") != NULL);
    char *argv5[] = {"--learning-rate", "1e-3x"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 2, argv5, 0, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--learning-rate: '1e-3x' is not a number");
    char *argv6[] = {"--no-batch-size", "--frobnicate"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 2, argv6, 0, &err), 0);
    char *argv7[] = {"--threads", "2", "--frobnicate=1"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 3, argv7, 0, &err), 2);
    ASSERT_EQ(c.threads, 2);
    char *argv8[] = {"--seed", "-1"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 2, argv8, 0, &err), PILE_EINVAL);
    char *argv9[] = {"--doc-mask=false", "--decay_all=true", "--min_lr", "-1"};
    ASSERT_EQ(pile_train_config_parse_args(&c, 4, argv9, 0, &err), 4);
    ASSERT_EQ(c.doc_mask, 0);
    ASSERT_EQ(c.decay_all, 1);
    ASSERT(c.min_lr == -1);
    char *argv21[] = {"--max-steps", "-1"};
    c.max_steps = 7;
    ASSERT_EQ(pile_train_config_parse_args(&c, 2, argv21, 0, &err), 2);
    ASSERT_EQ(c.max_steps, 0);

    TEST("resolve: config file, then DeepSpeed file, then flags win");
    const char *cfg = write_file("run.json", "{\"epochs\": 3, \"gradient_clipping\": 0.5, \"batch_size\": 2,"
                                             " \"warmup_ratio\": 0.1, \"doc_mask\": true, \"bogus\": 0}");
    const char *ds = write_file("run_ds.json", "{\"train_batch_size\": 16, \"train_micro_batch_size_per_gpu\": 4,"
                                               " \"gradient_clipping\": 2.0, \"gradient_accumulation_steps\": 4}");
    char *argv10[] = {"train", "--config", (char *)cfg, "--deepspeed=" /* completed below */, "--batch_size",
                      "8", "--warmup-ratio", "0.2"};
    char dsflag[700];
    snprintf(dsflag, sizeof dsflag, "--deepspeed=%s", ds);
    argv10[3] = dsflag;
    OK(pile_train_config_resolve(&c, 8, argv10, 1, &w, &err), &err);
    ASSERT_EQ(c.epochs, 3);                 /* config file */
    ASSERT(c.gradient_clipping == 2.0);     /* DeepSpeed over the config file */
    ASSERT_EQ(c.accumulation_steps, 4);
    ASSERT_EQ(c.batch_size, 8);             /* flag over both */
    ASSERT(c.warmup_ratio == 0.2);
    ASSERT_EQ(c.doc_mask, 1);
    ASSERT_STR_EQ(c.config_file, cfg);
    ASSERT_STR_EQ(c.deepspeed_file, ds);
    ASSERT(has(&w, "unknown key 'bogus' ignored"));
    ASSERT(has(&w, "train_batch_size 16 overridden by the flags"));
    w.len = 0;
    /* TrainingArguments' "deepspeed" in a config file names the DeepSpeed file */
    char hf[900];
    snprintf(hf, sizeof hf, "{\"deepspeed\": \"%s\", \"num_train_epochs\": 4}", ds);
    cfg = write_file("hf_run.json", hf);
    char *argv14[] = {"train", "--config", (char *)cfg};
    w.len = 0;
    OK(pile_train_config_resolve(&c, 3, argv14, 1, &w, &err), &err);
    ASSERT_EQ(c.epochs, 4);
    ASSERT_EQ(c.batch_size, 4);
    ASSERT_EQ(c.accumulation_steps, 4);
    ASSERT(c.gradient_clipping == 2.0);
    ASSERT_EQ(w.len, 0);
    /* DeepSpeed derives with the world size the flags give */
    ds = write_file("ws_ds.json", "{\"train_batch_size\": 32, \"train_micro_batch_size_per_gpu\": 4,"
                                  " \"zero_optimization\": {\"stage\": 1}}");
    snprintf(dsflag, sizeof dsflag, "--deepspeed=%s", ds);
    char *argv15[] = {"train", dsflag, "--world-size", "2"};
    w.len = 0;
    OK(pile_train_config_resolve(&c, 4, argv15, 1, &w, &err), &err);
    ASSERT_EQ(c.world_size, 2);
    ASSERT_EQ(c.batch_size, 4);
    ASSERT_EQ(c.accumulation_steps, 4);
    ASSERT(!has(&w, "overridden"));
    ASSERT(!has(&w, "no effect with one process"));
    /* cos_min_ratio is a share of the final peak rate, a flag's included */
    ds = write_file("cos_ds.json", "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\"}},\n"
                                   " \"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {\"cos_min_ratio\": 0.1}}}");
    snprintf(dsflag, sizeof dsflag, "--deepspeed=%s", ds);
    char *argv16[] = {"train", dsflag, "--learning-rate", "0.002"};
    OK(pile_train_config_resolve(&c, 4, argv16, 1, &w, &err), &err);
    ASSERT(c.learning_rate == 0.002);
    ASSERT(c.min_lr > 0.00019999 && c.min_lr < 0.00020001);
    char *argv17[] = {"train", dsflag, "--learning-rate", "0.002", "--min-lr", "0.00005"};
    OK(pile_train_config_resolve(&c, 6, argv17, 1, &w, &err), &err);
    ASSERT(c.min_lr == 0.00005);
    /* --config twice: the files apply in order, the later winning; both recorded */
    const char *cfg_a = write_file("a.json", "{\"epochs\": 3, \"batch_size\": 6, \"seed\": 9}");
    const char *cfg_b = write_file("b.json", "{\"batch_size\": 7, \"max_steps\": -1}");
    char cfgflag[700];
    snprintf(cfgflag, sizeof cfgflag, "--config=%s", cfg_b);
    char *argv18[] = {"train", "--config", (char *)cfg_a, cfgflag, "--seed", "4"};
    w.len = 0;
    OK(pile_train_config_resolve(&c, 6, argv18, 1, &w, &err), &err);
    ASSERT_EQ(c.epochs, 3);
    ASSERT_EQ(c.batch_size, 7);
    ASSERT_EQ(c.max_steps, 0);
    ASSERT_EQ(c.seed, 4);
    char both[1500];
    snprintf(both, sizeof both, "%s, %s", cfg_a, cfg_b);
    ASSERT_STR_EQ(c.config_file, both);
    char *argv19[] = {"train", "--config", (char *)cfg_b, "--config", (char *)cfg_a};
    OK(pile_train_config_resolve(&c, 5, argv19, 1, &w, &err), &err);
    ASSERT_EQ(c.batch_size, 6);
    ASSERT_EQ(c.seed, 9);
    /* --deepspeed twice: refused, both named */
    char *argv20[] = {"train", "--deepspeed", "x.json", "--deepspeed", "y.json"};
    ASSERT_EQ(pile_train_config_resolve(&c, 5, argv20, 1, &w, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--deepspeed is given twice ('x.json', 'y.json'): DeepSpeed takes one ds_config.json");
    char *argv11[] = {"train", "--epochs", "2", "positional"};
    ASSERT_EQ(pile_train_config_resolve(&c, 4, argv11, 1, &w, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "unknown option 'positional'");
    char *argv12[] = {"train", "--doc-mask-loss"};
    ASSERT_EQ(pile_train_config_resolve(&c, 2, argv12, 1, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "doc_mask_loss needs doc_mask") != NULL);
    char *argv13[] = {"train", "--precision=bf16"};
    w.len = 0;
    OK(pile_train_config_resolve(&c, 2, argv13, 1, &w, &err), &err);
    ASSERT(!has(&w, "cpu backend")); /* bf16: the cpu backend emulates it (issue 8) */
    char *argv_fp16[] = {"train", "--precision=fp16"};
    w.len = 0;
    OK(pile_train_config_resolve(&c, 2, argv_fp16, 1, &w, &err), &err);
    ASSERT(!has(&w, "cpu backend")); /* fp16 too, with loss scaling (issue 8) */
    pile_buf_free(&w);
}

static void test_round_trip(void)
{
    TEST("to_json: one key per line, read back to the same configuration");
    pile_train_config a, b;
    pile_err err;
    pile_buf j1 = {0}, j2 = {0}, w = {0};
    pile_train_config_defaults(&a);
    snprintf(a.data, sizeof a.data, "dir with \"quotes\" and \\ back\tslash");
    snprintf(a.tokenizer, sizeof a.tokenizer, "gpt2");
    a.n_layer = 3, a.n_head = 4, a.n_embd = 64;
    a.dropout = 0.1f;
    a.learning_rate = 3e-4;
    a.min_lr = 1.0 / 3.0;
    a.seed = UINT64_MAX;
    a.max_steps = 12345678901LL;
    a.warmup_steps = 7;
    a.precision = PILE_PRECISION_BF16;
    a.doc_mask = a.doc_mask_loss = a.decay_all = 1;
    a.zero_stage = 3;
    a.loss_scale = 65536;
    OK(pile_train_config_to_json(&a, &j1), &err);
    ASSERT(has(&j1, "\n  \"batch_size\": 8,\n"));
    ASSERT(has(&j1, "\"learning_rate\": 0.0003,"));
    /* every key on a line of its own */
    size_t lines = 0;
    for (size_t i = 0; i < j1.len; i++) lines += j1.data[i] == '\n';
    ASSERT(lines > 40);
    const char *p = write_file("rt.json", "");
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(j1.data, 1, j1.len, f);
        fclose(f);
    }
    pile_train_config_defaults(&b);
    OK(pile_train_config_load_json(&b, p, &w, &err), &err);
    ASSERT_EQ(w.len, 0);
    OK(pile_train_config_to_json(&b, &j2), &err);
    ASSERT_EQ(j1.len, j2.len);
    if (!j1.data || !j2.data || j1.len != j2.len || memcmp(j1.data, j2.data, j1.len) != 0)
        PILE_FAIL_("read back differs:\n%.*s\n%.*s", (int)j1.len, j1.data ? j1.data : "", (int)j2.len,
                   j2.data ? j2.data : "");
    ASSERT_STR_EQ(b.data, a.data);
    ASSERT(b.seed == UINT64_MAX);
    ASSERT(b.min_lr == a.min_lr);
    ASSERT(b.dropout == a.dropout);
    ASSERT_EQ(b.max_steps, a.max_steps);
    ASSERT_EQ(b.precision, PILE_PRECISION_BF16);
    pile_buf_free(&j1);
    pile_buf_free(&j2);
    pile_buf_free(&w);

    TEST("help: a line per flag with its default");
    pile_buf h = {0};
    pile_train_config_help(&h);
    ASSERT(has(&h, "--batch_size N") && has(&h, "(default 8)\n"));
    ASSERT(has(&h, "--[no-]doc_mask"));
    ASSERT(has(&h, "--learning_rate X") && has(&h, "(default 0.0006)"));
    ASSERT(has(&h, "--config S"));
    ASSERT(has(&h, "per_device_train_batch_size (batch_size)"));
    ASSERT(has(&h, "bf16 and fp16 (true: that precision; --bf16, --fp16)\n"));
    ASSERT(has(&h, "--[no-]consecutive_hysteresis"));
    pile_buf_free(&h);
}

static void test_check(void)
{
    TEST("check: each invariant refused with the field named");
    pile_train_config c;
    pile_err err;
#define BAD(stmt, needle)                                                                   \
    do {                                                                                    \
        pile_train_config_defaults(&c);                                                     \
        stmt;                                                                               \
        ASSERT_EQ(pile_train_config_check(&c, &err), PILE_EINVAL);                          \
        if (!strstr(err.msg, needle)) PILE_FAIL_("'%s' does not name '%s'", err.msg, needle); \
    } while (0)
    BAD(c.batch_size = 0, "batch_size");
    BAD(c.accumulation_steps = -1, "accumulation_steps");
    BAD(c.epochs = 0, "epochs");
    BAD(c.learning_rate = 0, "learning_rate");
    BAD(c.warmup_ratio = 1.5, "warmup_ratio");
    BAD(c.warmup_ratio = -0.1, "warmup_ratio");
    BAD(c.dropout = 1.0f, "dropout");
    BAD((c.n_embd = 100, c.n_head = 3), "n_embd 100 is not divisible by n_head 3");
    BAD(c.doc_mask_loss = 1, "doc_mask_loss needs doc_mask");
    BAD(c.val_fraction = 0.6, "val_fraction");
    BAD(c.dist_timeout = 0, "dist_timeout");
    BAD(c.max_length = -1, "max_length");
    BAD(c.world_size = 0, "world_size");
    BAD((c.precision = PILE_PRECISION_FP16, c.loss_scale = -1),
        "loss_scale must be 0 (dynamic) or a positive finite fp32 number, not -1");
    BAD((c.precision = PILE_PRECISION_FP16, c.loss_scale = 1e39), "loss_scale");
    BAD((c.precision = PILE_PRECISION_FP16, c.min_loss_scale = 0),
        "min_loss_scale must be a positive finite fp32 number, not 0");
    BAD((c.precision = PILE_PRECISION_FP16, c.initial_scale_power = 128),
        "initial_scale_power must be 0 to 127, not 128");
    BAD((c.precision = PILE_PRECISION_FP16, c.loss_scale_window = 0), "loss_scale_window");
    BAD((c.precision = PILE_PRECISION_FP16, c.hysteresis = 0), "hysteresis");
    BAD((c.learning_rate = 1e-3, c.min_lr = 2e-3), "min_lr 0.002 is above learning_rate 0.001");
    BAD(snprintf(c.recompute, sizeof c.recompute, "all"), "recompute mode 'all'");
#undef BAD
    /* the fp16 settings are not checked for another precision (as DeepSpeed) */
    pile_train_config_defaults(&c);
    c.precision = PILE_PRECISION_BF16, c.min_loss_scale = 0;
    ASSERT_EQ(pile_train_config_check(&c, &err), 0);
    /* nor, under a static scale, those of the dynamic one */
    c.precision = PILE_PRECISION_FP16, c.loss_scale = 1024;
    ASSERT_EQ(pile_train_config_check(&c, &err), 0);
    pile_train_config_defaults(&c);
    c.n_embd = 96, c.n_head = 3, c.doc_mask = c.doc_mask_loss = 1, c.val_fraction = 0.5, c.warmup_ratio = 1;
    c.min_lr = c.learning_rate; /* a constant rate after warmup */
    ASSERT_EQ(pile_train_config_check(&c, &err), 0);
}

/* Resolves argv with w cleared; the return code. */
static int resolve(pile_train_config *c, int argc, char **argv, pile_buf *w, pile_err *err)
{
    w->len = 0;
    return pile_train_config_resolve(c, argc, argv, 1, w, err);
}

static void test_precision(void)
{
    pile_train_config c;
    pile_err err;
    pile_buf w = {0};
    char want[1400];
    const char *p;

    TEST("precision: Hugging Face's bf16 / fp16 booleans in a config file");
    pile_train_config_defaults(&c);
    p = write_file("hf.json", "{\"bf16\": true, \"fp16\": false}");
    OK(pile_train_config_load_json(&c, p, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_BF16);
    ASSERT_EQ(w.len, 0);
    p = write_file("hf.json", "{\"fp16\": true, \"precision\": \"fp16\"}");
    OK(pile_train_config_load_json(&c, p, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP16);
    /* false is their default: it changes nothing */
    p = write_file("hf.json", "{\"fp16\": false}");
    OK(pile_train_config_load_json(&c, p, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP16);

    TEST("precision: bf16 and fp16 both enabled refused naming both, wherever they come from");
    pile_train_config_defaults(&c);
    p = write_file("hf.json", "{\"bf16\": true, \"batch_size\": 3, \"fp16\": true}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': 'bf16' and 'fp16' are both enabled", p);
    ASSERT_STR_EQ(err.msg, want);
    ASSERT_EQ(c.batch_size, 8); /* nothing applied */
    ASSERT_EQ(c.precision, PILE_PRECISION_FP32);
    p = write_file("hf.json", "{\"precision\": \"fp32\", \"fp16\": true}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': 'fp16' is enabled but 'precision' is fp32", p);
    ASSERT_STR_EQ(err.msg, want);
    p = write_file("hf.json", "{\"bf16\": 1}");
    ASSERT_EQ(pile_train_config_load_json(&c, p, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': 'bf16' must be true or false", p);
    ASSERT_STR_EQ(err.msg, want);
    char *both[] = {"train", "--bf16", "--fp16"};
    ASSERT_EQ(resolve(&c, 3, both, &w, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--bf16 and --fp16 are both enabled");
    char *against[] = {"train", "--fp16", "--precision", "bf16"};
    ASSERT_EQ(resolve(&c, 4, against, &w, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--fp16 is enabled but --precision is bf16");
    char *badval[] = {"train", "--bf16=maybe"};
    ASSERT_EQ(resolve(&c, 2, badval, &w, &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--bf16: 'maybe' is not true or false");
    p = write_file("ds.json", "{\"bf16\": {\"enabled\": true}, \"fp16\": {\"enabled\": true}}");
    ASSERT_EQ(pile_train_config_load_deepspeed(&c, p, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "fp16 and bf16 are both enabled") != NULL);

    TEST("precision: flags, and no cpu backend warning (it emulates bf16 and fp16)");
    char *fp16[] = {"train", "--fp16"};
    OK(resolve(&c, 2, fp16, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP16);
    ASSERT(!has(&w, "cpu backend")); /* fp16 too, with loss scaling (issue 8) */
    char *off[] = {"train", "--bf16=false", "--precision=bf16"};
    OK(resolve(&c, 3, off, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_BF16);
    char *none[] = {"train"};
    OK(resolve(&c, 1, none, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP32);
    ASSERT(!has(&w, "cpu backend"));

    TEST("precision: ds_config.json's word replaces the config file's, with a warning");
    const char *cfg = write_file("hf.json", "{\"bf16\": true}");
    const char *ds = write_file("ds.json", "{\"fp16\": {\"enabled\": true, \"consecutive_hysteresis\": true,"
                                           " \"min_loss_scale\": 0.25}}");
    char a1[1100], a2[1100];
    snprintf(a1, sizeof a1, "--config=%s", cfg);
    snprintf(a2, sizeof a2, "--deepspeed=%s", ds);
    char *files[] = {"train", a1, a2};
    OK(resolve(&c, 3, files, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP16);
    snprintf(want, sizeof want, "'%s': precision bf16 set before replaced by fp16", ds);
    ASSERT(has(&w, want));
    ASSERT(!has(&w, "cpu backend"));
    ASSERT_EQ(c.consecutive_hysteresis, 1);
    ds = write_file("ds.json", "{\"fp16\": {\"enabled\": false}}");
    cfg = write_file("hf.json", "{\"fp16\": true}");
    OK(resolve(&c, 3, files, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_FP32);
    snprintf(want, sizeof want, "'%s': precision fp16 set before replaced by fp32", ds);
    ASSERT(has(&w, want));
    ASSERT(!has(&w, "cpu backend"));
    /* a flag still wins, without a second warning of its own */
    char *flag[] = {"train", a1, a2, "--bf16"};
    OK(resolve(&c, 4, flag, &w, &err), &err);
    ASSERT_EQ(c.precision, PILE_PRECISION_BF16);

    TEST("precision: none given is the backend's (bf16 on cuda, fp32 on the cpu); given, it stays");
    {
        struct {
            int argc;
            char *argv[4];
            const char *config, *ds;
            int given;
            pile_precision on_cuda;
        } cases[] = {
            {1, {"train"}, NULL, NULL, 0, PILE_PRECISION_BF16},
            {3, {"train", "--precision", "fp32"}, NULL, NULL, 1, PILE_PRECISION_FP32},
            {2, {"train", "--fp16"}, NULL, NULL, 1, PILE_PRECISION_FP16},
            /* false is the Hugging Face booleans' default: it says nothing */
            {2, {"train", "--bf16=false"}, NULL, NULL, 0, PILE_PRECISION_BF16},
            {1, {"train"}, "{\"bf16\": false, \"fp16\": false}", NULL, 0, PILE_PRECISION_BF16},
            {1, {"train"}, "{\"precision\": \"fp32\"}", NULL, 1, PILE_PRECISION_FP32},
            {1, {"train"}, NULL, "{\"bf16\": {\"enabled\": true}}", 1, PILE_PRECISION_BF16},
            {1, {"train"}, NULL, "{\"fp16\": {\"enabled\": true}}", 1, PILE_PRECISION_FP16},
            {1, {"train"}, NULL, "{\"train_micro_batch_size_per_gpu\": 2}", 0, PILE_PRECISION_BF16},
            /* a disabled block undoing a config's 16 bits names fp32 */
            {1, {"train"}, "{\"fp16\": true}", "{\"fp16\": {\"enabled\": false}}", 1, PILE_PRECISION_FP32},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char fa[1100], da[1100];
            char *argv[6];
            int argc = 0;
            for (int k = 0; k < cases[i].argc; k++) argv[argc++] = cases[i].argv[k];
            if (cases[i].config) {
                snprintf(fa, sizeof fa, "--config=%s", write_file("prec.json", cases[i].config));
                argv[argc++] = fa;
            }
            if (cases[i].ds) {
                snprintf(da, sizeof da, "--deepspeed=%s", write_file("prec_ds.json", cases[i].ds));
                argv[argc++] = da;
            }
            pile_train_config_defaults(&c);
            OK(resolve(&c, argc, argv, &w, &err), &err);
            if (c.precision_given != cases[i].given) printf("# case %zu\n", i);
            ASSERT_EQ(c.precision_given, cases[i].given);
            ASSERT_EQ(pile_train_config_precision(&c, "cuda"), cases[i].on_cuda);
            ASSERT_EQ(pile_train_config_precision(&c, "cpu"),
                      cases[i].given ? cases[i].on_cuda : PILE_PRECISION_FP32);
        }
        /* a run records what it settled on: its checkpoints' config, read
         * back on a resume, names the precision */
        pile_train_config_defaults(&c);
        c.precision = PILE_PRECISION_BF16;
        pile_buf j = {0};
        OK(pile_train_config_to_json(&c, &j), &err);
        pile_train_config_defaults(&c);
        p = write_file("settled.json", "");
        FILE *f = fopen(p, "wb");
        ASSERT(f && fwrite(j.data, 1, j.len, f) == j.len);
        if (f) fclose(f);
        pile_buf_free(&j);
        OK(pile_train_config_load_json(&c, p, &w, &err), &err);
        ASSERT_EQ(c.precision_given, 1);
        ASSERT_EQ(pile_train_config_precision(&c, "cpu"), PILE_PRECISION_BF16);
    }

    TEST("loss scaler settings: from ds_config.json and flags, to the scaler, shown by --print-config");
    ds = write_file("ds.json", "{\"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 20,"
                               " \"loss_scale_window\": 100, \"hysteresis\": 4, \"consecutive_hysteresis\": true,"
                               " \"min_loss_scale\": 2}}");
    char *ls[] = {"train", a2, "--hysteresis", "5", "--no-consecutive-hysteresis"};
    OK(resolve(&c, 5, ls, &w, &err), &err);
    pile_loss_scaler_config lc;
    pile_train_config_loss_scaler(&c, &lc);
    ASSERT(lc.loss_scale == 0);
    ASSERT_EQ(lc.initial_scale_power, 20);
    ASSERT_EQ(lc.loss_scale_window, 100);
    ASSERT_EQ(lc.hysteresis, 5);
    ASSERT_EQ(lc.consecutive_hysteresis, 0);
    ASSERT(lc.min_loss_scale == 2);
    pile_loss_scaler *sc = NULL;
    OK(pile_loss_scaler_create(&sc, &lc, &err), &err);
    ASSERT(sc && pile_loss_scaler_scale(sc) == 1048576);
    pile_loss_scaler_free(sc);
    pile_buf j = {0};
    c.consecutive_hysteresis = 1;
    OK(pile_train_config_to_json(&c, &j), &err);
    ASSERT(has(&j, "\"precision\": \"fp16\",\n"));
    ASSERT(has(&j, "\"loss_scale\": 0,\n  \"initial_scale_power\": 20,\n  \"loss_scale_window\": 100,\n"
                   "  \"hysteresis\": 5,\n  \"consecutive_hysteresis\": true,\n  \"min_loss_scale\": 2\n"));
    pile_buf_free(&j);
    ds = write_file("ds.json", "{\"fp16\": {\"enabled\": true, \"min_loss_scale\": -1}}");
    ASSERT_EQ(resolve(&c, 2, ls, &w, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "min_loss_scale must be a positive") != NULL);
    ds = write_file("ds.json", "{\"fp16\": {\"consecutive_hysteresis\": \"yes\"}}");
    ASSERT_EQ(resolve(&c, 2, ls, &w, &err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s': 'fp16.consecutive_hysteresis' must be true or false", ds);
    ASSERT_STR_EQ(err.msg, want);
    pile_buf_free(&w);
}

/* ----------------------------------------------------------------- data */

#define L 16
#define VOCAB 300

typedef struct row_spec {
    uint32_t len;
    uint32_t ndocs;
    uint32_t docs[4];
} row_spec;

static uint32_t tok_at(uint64_t row, uint32_t p)
{
    return (uint32_t)((row * 37 + p * 11 + 1) % (VOCAB - 1));
}

/* The format write_shard writes (0: the current one). */
static uint32_t write_version;

static int write_shard(const char *dir, const char *name, const row_spec *rows, size_t n, uint64_t row0,
                       uint8_t fp0, uint32_t max_length, pile_err *err)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    pile_shard_params prm = {0};
    prm.max_length = max_length;
    prm.vocab_size = VOCAB;
    prm.eot_id = VOCAB - 1;
    prm.pad_id = VOCAB - 1;
    prm.split = name[0] == 'v' ? PILE_SPLIT_VAL : PILE_SPLIT_TRAIN;
    prm.version = write_version;
    for (int i = 0; i < PILE_SHARD_FP_BYTES; i++) prm.tokenizer_fp[i] = (uint8_t)(fp0 + i);
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, path, &prm, err);
    if (rc < 0) return rc;
    uint16_t sub;
    rc = pile_shard_writer_subset(w, "Test", 4, &sub, err);
    for (size_t r = 0; rc == 0 && r < n; r++) {
        uint32_t toks[L];
        pile_shard_doc docs[4];
        for (uint32_t p = 0; p < rows[r].len; p++) toks[p] = tok_at(row0 + r, p);
        for (uint32_t k = 0; k < rows[r].ndocs; k++) docs[k] = (pile_shard_doc){rows[r].docs[k], sub, 0};
        rc = pile_shard_writer_add_row(w, toks, rows[r].len, docs, rows[r].ndocs, sub, err);
    }
    if (rc == 0) rc = pile_shard_writer_finish(w, NULL, err);
    pile_shard_writer_close(w);
    return rc;
}

/* The rows of the hand-made data set (two train shards). */
static const row_spec shard0[] = {
    {16, 3, {0, 5, 11}}, {16, 1, {3}}, {7, 1, {0}}, {1, 1, {0}}, {16, 0, {0}},
};
static const row_spec shard1[] = {
    {16, 2, {2, 15}}, {2, 1, {1}}, {16, 1, {0}}, {10, 2, {0, 4}},
};

typedef struct ref_row {
    const row_spec *spec;
    uint64_t id; /* global row number used for the tokens */
} ref_row;

/* The straightforward reading of train_data.h, to compare with. */
static int ref_sample(const ref_row *rr, uint32_t win, int T, int dml, int32_t *tok, int32_t *tgt, int32_t *ds)
{
    const row_spec *r = rr->spec;
    uint32_t start = win * (uint32_t)T;
    int count = 0;
    for (int t = 0; t < T; t++) {
        uint32_t p = start + (uint32_t)t;
        tok[t] = p < r->len ? (int32_t)tok_at(rr->id, p) : VOCAB - 1;
        tgt[t] = p + 1 < r->len ? (int32_t)tok_at(rr->id, p + 1) : -1;
        int32_t s = 0;
        for (uint32_t k = 0; k < r->ndocs; k++) {
            if (r->docs[k] <= p && r->docs[k] > start) s = (int32_t)(r->docs[k] - start);
            if (dml && r->docs[k] == p + 1) tgt[t] = -1;
        }
        ds[t] = s;
        count += tgt[t] >= 0;
    }
    return count;
}

static void check_against_reference(const pile_data *d, int T, uint64_t expect_samples)
{
    ref_row rows[16];
    size_t nr = 0;
    for (size_t i = 0; i < sizeof shard0 / sizeof shard0[0]; i++) rows[nr] = (ref_row){&shard0[i], nr}, nr++;
    for (size_t i = 0; i < sizeof shard1 / sizeof shard1[0]; i++) rows[nr] = (ref_row){&shard1[i], nr}, nr++;
    int32_t tok[L], tgt[L], ds[L], rtok[L], rtgt[L], rds[L];
    uint64_t i = 0;
    int bad = 0;
    for (size_t r = 0; r < nr; r++) {
        uint32_t len = rows[r].spec->len, nwin = len < 2 ? 0 : (len - 1 + (uint32_t)T - 1) / (uint32_t)T;
        for (uint32_t win = 0; win < nwin; win++, i++) {
            for (int dml = 0; dml < 2; dml++) {
                if (i >= pile_data_get_info(d)->train_samples) break;
                int n = pile_data_sample(d, 0, i, dml, tok, tgt, ds, NULL);
                int rn = ref_sample(&rows[r], win, T, dml, rtok, rtgt, rds);
                if (n != rn || memcmp(tok, rtok, sizeof(int32_t) * (size_t)T) ||
                    memcmp(tgt, rtgt, sizeof(int32_t) * (size_t)T) || memcmp(ds, rds, sizeof(int32_t) * (size_t)T)) {
                    if (!bad++) PILE_FAIL_("T=%d sample %" PRIu64 " (row %zu window %u dml %d) differs", T, i, r, win, dml);
                }
                if (!dml) ASSERT(n > 0);
            }
        }
    }
    ASSERT_EQ(i, expect_samples);
}

static void test_data_windows(const char *dir)
{
    pile_err err;
    pile_data *d = NULL;

    TEST("data: one window per row, samples exactly as the header says");
    OK(pile_data_open(&d, dir, 0, 0.0, &err), &err);
    if (!d) return;
    const pile_data_info *in = pile_data_get_info(d);
    ASSERT_EQ(pile_data_seq_len(d), L);
    ASSERT_EQ(in->max_length, L);
    ASSERT_EQ(in->vocab_size, VOCAB);
    ASSERT_EQ(in->eot_id, VOCAB - 1);
    ASSERT_EQ(in->train_shards, 2);
    ASSERT_EQ(in->val_shards, 0);
    ASSERT_EQ(in->val_held_out, 0);
    ASSERT_EQ(in->val_samples, 0);
    ASSERT_EQ(in->train_samples, 8); /* the row of one token has no target */
    ASSERT_EQ(in->train_tokens, 16 * 5 + 7 + 2 + 10);
    ASSERT_STR_EQ(in->tokenizer_spec, "");
    ASSERT_EQ(in->tokenizer_fp[3], 3);
    /* row 0 by hand: documents at 0, 5, 11 */
    int32_t tok[L], tgt[L], ds[L];
    ASSERT_EQ(pile_data_sample(d, 0, 0, 0, tok, tgt, ds, NULL), 15);
    ASSERT_EQ(tok[0], tok_at(0, 0));
    ASSERT_EQ(tgt[0], tok_at(0, 1));
    ASSERT_EQ(tgt[14], tok_at(0, 15));
    ASSERT_EQ(tgt[15], -1);
    ASSERT_EQ(ds[0], 0);
    ASSERT_EQ(ds[4], 0);
    ASSERT_EQ(ds[5], 5);
    ASSERT_EQ(ds[10], 5);
    ASSERT_EQ(ds[11], 11);
    ASSERT_EQ(ds[15], 11);
    ASSERT_EQ(pile_data_sample(d, 0, 0, 1, tok, tgt, NULL, NULL), 13);
    ASSERT_EQ(tgt[4], -1);
    ASSERT_EQ(tgt[10], -1);
    ASSERT_EQ(tgt[3], tok_at(0, 4));
    /* row 2 (7 tokens): padding and no targets past the length */
    ASSERT_EQ(pile_data_sample(d, 0, 2, 0, tok, tgt, ds, NULL), 6);
    ASSERT_EQ(tgt[5], tok_at(2, 6));
    ASSERT_EQ(tgt[6], -1);
    ASSERT_EQ(tok[7], VOCAB - 1);
    /* sample 3 is row 4: row 3 (one token) has no sample */
    ASSERT_EQ(pile_data_sample(d, 0, 3, 0, tok, tgt, ds, NULL), 15);
    ASSERT_EQ(tok[0], tok_at(4, 0));
    /* row 1 begins inside a document: doc_start 0 until offset 3 */
    pile_data_sample(d, 0, 1, 0, tok, tgt, ds, NULL);
    ASSERT_EQ(ds[2], 0);
    ASSERT_EQ(ds[3], 3);
    check_against_reference(d, L, 8);
    pile_data_close(d);

    static const int Ts[] = {4, 5, 3, 1, 15};
    for (size_t k = 0; k < sizeof Ts / sizeof Ts[0]; k++) {
        int T = Ts[k];
        static char names[5][80]; /* TEST keeps the pointer until the case ends */
        snprintf(names[k], sizeof names[k], "data: windows of %d tokens against the reference", T);
        TEST(names[k]);
        d = NULL;
        OK(pile_data_open(&d, dir, T, 0.0, &err), &err);
        if (!d) continue;
        uint64_t want = 0;
        const row_spec *all[2] = {shard0, shard1};
        size_t cnt[2] = {sizeof shard0 / sizeof shard0[0], sizeof shard1 / sizeof shard1[0]};
        for (int s = 0; s < 2; s++)
            for (size_t r = 0; r < cnt[s]; r++)
                want += all[s][r].len < 2 ? 0 : (all[s][r].len - 1 + (uint32_t)T - 1) / (uint32_t)T;
        ASSERT_EQ(pile_data_get_info(d)->train_samples, want);
        check_against_reference(d, T, want);
        pile_data_close(d);
    }
    TEST("data: seq_len past max_length refused");
    d = NULL;
    ASSERT_EQ(pile_data_open(&d, dir, L + 1, 0.0, &err), PILE_EINVAL);
    ASSERT(d == NULL);
    ASSERT(strstr(err.msg, "17") && strstr(err.msg, "16"));
}

/* Whether epoch `epoch`'s order of d's n train samples is a permutation;
 * the order into order[0..n) when order is not NULL. */
static int is_permutation(const pile_data *d, uint64_t seed, uint64_t epoch, uint64_t n, uint64_t *order)
{
    unsigned char *seen = calloc(n ? n : 1, 1);
    int ok = seen != NULL;
    for (uint64_t i = 0; ok && i < n; i++) {
        uint64_t s = pile_data_epoch_sample(d, seed, epoch, i);
        if (order) order[i] = s;
        if (s >= n || seen[s]) ok = 0;
        else seen[s] = 1;
    }
    free(seen);
    return ok;
}

/* A folder of one train shard of `rows` rows of `len` tokens (max_length
 * len), opened with windows of T: rows x ceil((len - 1) / T) samples. */
static pile_data *open_rows(const char *dir, uint64_t rows, uint32_t len, int T)
{
    pile_err err;
    pile_data *d = NULL;
    row_spec *spec = malloc(rows * sizeof *spec);
    if (!spec) {
        PILE_FAIL_("out of memory");
        return NULL;
    }
    for (uint64_t r = 0; r < rows; r++) spec[r] = (row_spec){len, 1, {0}};
    OK(write_shard(dir, "train-00000.shard", spec, rows, 0, 0, len, &err), &err);
    free(spec);
    OK(pile_data_open(&d, dir, T, 0.0, &err), &err);
    return d;
}

/* Pearson's chi-square of counts against a uniform expectation. */
static double chi_square(const uint64_t *count, size_t cells, double expect)
{
    double x = 0;
    for (size_t i = 0; i < cells; i++) x += ((double)count[i] - expect) * ((double)count[i] - expect) / expect;
    return x;
}

static void test_data_epoch_order(void)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/orders", tmp);
    if (mkdir(dir, 0755) != 0) PILE_FAIL_("cannot mkdir '%s'", dir);

    TEST("data: epoch order a permutation for every size");
    uint64_t sizes[12] = {1, 2, 3, 4, 5, 16, 17, 64, 1000, 4097};
    pile_test_rng_state = 20240611;
    sizes[10] = 6 + pile_test_rng() % 3000;
    sizes[11] = 4097 + pile_test_rng() % 20000;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        pile_data *d = open_rows(dir, sizes[k], 2, 0);
        if (!d) continue;
        ASSERT_EQ(pile_data_get_info(d)->train_samples, sizes[k]);
        for (uint64_t e = 0; e < 4; e++)
            if (!is_permutation(d, 42 + e / 2, e, sizes[k], NULL))
                PILE_FAIL_("n=%" PRIu64 " seed %" PRIu64 " epoch %" PRIu64 ": not a permutation", sizes[k],
                           42 + e / 2, e);
        pile_data_close(d);
    }
    /* 1,050,000 samples: just above a power of four, the longest cycle walks */
    pile_data *big = open_rows(dir, 70000, 16, 1);
    if (big) {
        ASSERT_EQ(pile_data_get_info(big)->train_samples, 1050000);
        ASSERT(is_permutation(big, 42, 3, 1050000, NULL));
        /* pinned: a checkpoint's data position must mean the same sample in
         * every build (values from an independent Python reading of the
         * construction described in train_data.c) */
        static const uint64_t want[4] = {100187, 49638, 818610, 525424};
        for (uint64_t i = 0; i < 4; i++) ASSERT_EQ(pile_data_epoch_sample(big, 42, 3, i), want[i]);
        pile_data_close(big);
    }

    TEST("data: epoch order depends on seed and epoch, only on them");
    pile_data *d = open_rows(dir, 1000, 2, 0);
    if (!d) return;
    const uint64_t n = 1000;
    uint64_t *o[12];
    int alloc_ok = 1;
    for (int k = 0; k < 12; k++) alloc_ok &= (o[k] = malloc(n * sizeof *o[k])) != NULL;
    if (!alloc_ok) {
        PILE_FAIL_("out of memory");
    } else {
        for (int e = 0; e < 10; e++) ASSERT(is_permutation(d, 42, (uint64_t)e, n, o[e]));
        ASSERT(is_permutation(d, 43, 0, n, o[10]));
        ASSERT(is_permutation(d, 42, 0, n, o[11]));
        ASSERT_MEM_EQ(o[0], o[11], n * sizeof *o[0]);
        static const uint64_t want[6] = {762, 86, 533, 84, 741, 192};
        for (int i = 0; i < 6; i++) ASSERT_EQ(o[0][i], want[i]);
        /* any two orders agree at about one position in n, never at many */
        for (int a = 0; a < 11; a++)
            for (int b = a + 1; b < 11; b++) {
                uint64_t same = 0;
                for (uint64_t i = 0; i < n; i++) same += o[a][i] == o[b][i];
                if (same > 20) PILE_FAIL_("orders %d and %d agree at %" PRIu64 " of %" PRIu64, a, b, same, n);
            }
        /* not a stride: the steps between neighbours take many values (a
         * random order: about n (1 - 1/e) distinct ones) */
        unsigned char *step = calloc(n, 1);
        uint64_t distinct = 0;
        for (uint64_t i = 0; step && i + 1 < n; i++) {
            uint64_t s = (o[0][i + 1] + n - o[0][i]) % n;
            distinct += !step[s];
            step[s] = 1;
        }
        free(step);
        ASSERT(distinct > n / 2);
    }
    for (int k = 0; k < 12; k++) free(o[k]);

    TEST("data: epoch order statistically uniform");
    /* fixed points over 2000 epochs: one per order on average (Poisson) */
    uint64_t fixed = 0;
    for (uint64_t e = 0; e < 2000; e++)
        for (uint64_t i = 0; i < n; i++) fixed += pile_data_epoch_sample(d, 7, e, i) == i;
    if (fixed < 1400 || fixed > 2600) PILE_FAIL_("%" PRIu64 " fixed points in 2000 orders", fixed);
    pile_data_close(d);
    /* where samples 0 and 1 land over 6400 epochs of 64 samples: each
     * position about 100 times, and the gap between them spread too
     * (chi-square, 63 degrees of freedom: mean 63, sd 11; 150 is far out) */
    d = open_rows(dir, 64, 2, 0);
    if (!d) return;
    uint64_t at0[64] = {0}, gap[64] = {0}, first[64] = {0};
    for (uint64_t e = 0; e < 6400; e++) {
        uint64_t p0 = 0, p1 = 0;
        for (uint64_t i = 0; i < 64; i++) {
            uint64_t s = pile_data_epoch_sample(d, 11, e, i);
            if (s == 0) p0 = i;
            if (s == 1) p1 = i;
            if (i == 0) first[s]++;
        }
        at0[p0]++;
        gap[(p1 + 64 - p0) % 64]++;
    }
    ASSERT_EQ(gap[0], 0);
    double x0 = chi_square(at0, 64, 100), xf = chi_square(first, 64, 100), xg = chi_square(gap + 1, 63, 6400.0 / 63);
    printf("# chi-square (63 df): position of sample 0 %.1f, first sample %.1f, gap 0 -> 1 %.1f\n", x0, xf, xg);
    ASSERT(x0 < 150);
    ASSERT(xf < 150);
    ASSERT(xg < 150);
    pile_data_close(d);
}

static void test_data_order_and_split(const char *dir)
{
    pile_err err;
    pile_data *all = NULL, *d = NULL;

    OK(pile_data_open(&all, dir, 3, 0.0, &err), &err);
    if (!all) return;
    uint64_t n = pile_data_get_info(all)->train_samples;

    TEST("data: held-out validation is the tail of the samples, out of training");
    OK(pile_data_open(&d, dir, 3, 0.2, &err), &err);
    if (d) {
        const pile_data_info *in = pile_data_get_info(d);
        uint64_t nval = (n * 2 + 9) / 10;
        ASSERT_EQ(in->val_held_out, 1);
        ASSERT_EQ(in->val_samples, nval);
        ASSERT_EQ(in->train_samples, n - nval);
        ASSERT_EQ(in->train_tokens + in->val_tokens, pile_data_get_info(all)->train_tokens);
        ASSERT(in->val_tokens > 0);
        int32_t a[3], at[3], ad[3], b[3], bt[3], bd[3];
        for (uint64_t j = 0; j < nval; j++) {
            int na = pile_data_sample(d, 1, j, 1, a, at, ad, NULL);
            int nb = pile_data_sample(all, 0, in->train_samples + j, 1, b, bt, bd, NULL);
            ASSERT_EQ(na, nb);
            ASSERT_MEM_EQ(a, b, sizeof a);
            ASSERT_MEM_EQ(at, bt, sizeof at);
            ASSERT_MEM_EQ(ad, bd, sizeof ad);
        }
        for (uint64_t j = 0; j < in->train_samples; j++) {
            pile_data_sample(d, 0, j, 0, a, at, ad, NULL);
            pile_data_sample(all, 0, j, 0, b, bt, bd, NULL);
            ASSERT_MEM_EQ(a, b, sizeof a);
        }
        /* the order visits the train samples only, never the held-out tail */
        ASSERT(is_permutation(d, 42, 0, in->train_samples, NULL));
        pile_data_close(d);
    }
    d = NULL;
    ASSERT_EQ(pile_data_open(&d, dir, 3, 1.0, &err), PILE_EINVAL);
    pile_data_close(all);
}

/* Two folders read as one: each holds out the tail of its own samples
 * (so validation draws on both), the train samples are the folders'
 * heads in order, and the shards are named <folder>/<file>. */
static void test_data_folders(void)
{
    pile_err err;
    char a[700], b[700], both[1500];
    snprintf(a, sizeof a, "%s/fa", tmp);
    snprintf(b, sizeof b, "%s/fb", tmp);
    snprintf(both, sizeof both, "%s,%s", a, b);
    if (mkdir(a, 0755) != 0 || mkdir(b, 0755) != 0) PILE_FAIL_("cannot mkdir '%s'", a);
    OK(write_shard(a, "train-00000.shard", shard0, 5, 0, 0, L, &err), &err);
    OK(write_shard(b, "train-00000.shard", shard1, 4, 5, 0, L, &err), &err);
    pile_data *da = NULL, *db = NULL, *d = NULL, *all = NULL;
    OK(pile_data_open(&da, a, 3, 0.2, &err), &err);
    OK(pile_data_open(&db, b, 3, 0.2, &err), &err);
    OK(pile_data_open(&all, both, 3, 0.0, &err), &err);
    TEST("data: two folders as one: each holds out its own tail, the train samples are both heads");
    OK(pile_data_open(&d, both, 3, 0.2, &err), &err);
    if (!da || !db || !d || !all) return;
    const pile_data_info *ia = pile_data_get_info(da), *ib = pile_data_get_info(db), *in = pile_data_get_info(d);
    ASSERT_EQ(in->folders, 2);
    ASSERT_EQ(in->val_held_out, 1);
    ASSERT_EQ(in->val_samples, ia->val_samples + ib->val_samples);
    ASSERT_EQ(in->train_samples, ia->train_samples + ib->train_samples);
    ASSERT_EQ(in->train_tokens + in->val_tokens, pile_data_get_info(all)->train_tokens);
    ASSERT(ia->val_samples > 0 && ib->val_samples > 0);
    int32_t x[3], xt[3], y[3], yt[3];
    for (int val = 0; val < 2; val++) {
        uint64_t na = val ? ia->val_samples : ia->train_samples, nb = val ? ib->val_samples : ib->train_samples;
        for (uint64_t j = 0; j < na + nb; j++) {
            int r1 = pile_data_sample(d, val, j, 0, x, xt, NULL, NULL);
            int r2 = pile_data_sample(j < na ? da : db, val, j < na ? j : j - na, 0, y, yt, NULL, NULL);
            ASSERT_EQ(r1, r2);
            ASSERT_MEM_EQ(x, y, sizeof x);
            ASSERT_MEM_EQ(xt, yt, sizeof xt);
        }
    }
    ASSERT(is_permutation(d, 42, 0, in->train_samples, NULL));
    pile_buf id = {0};
    ASSERT_EQ(pile_data_identity(d, &id), 0);
    ASSERT(id.data && strstr(id.data, "\"fa/train-00000.shard\"") && strstr(id.data, "\"fb/train-00000.shard\""));
    pile_buf_free(&id);
    pile_data_close(d);
    d = NULL;

    TEST("data: a folder given twice refused");
    snprintf(both, sizeof both, "%s,%s/", a, a);
    ASSERT_EQ(pile_data_open(&d, both, 3, 0.2, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "are the same folder") != NULL);
    pile_data_close(da);
    pile_data_close(db);
    pile_data_close(all);
}

static void test_data_refusals(void)
{
    pile_err err;
    pile_data *d = NULL;
    char dir[700];

    TEST("data: an empty folder refused");
    snprintf(dir, sizeof dir, "%s/empty", tmp);
    if (mkdir(dir, 0755) != 0) PILE_FAIL_("cannot mkdir '%s'", dir);
    write_file("empty/test-00000.shard", "not looked at");
    ASSERT_EQ(pile_data_open(&d, dir, 0, 0.01, &err), PILE_ENOENT);
    char want[900];
    snprintf(want, sizeof want, "no train-*.shard in '%s' (run pile-prep first)", dir);
    ASSERT_STR_EQ(err.msg, want);
    ASSERT(d == NULL);
    snprintf(dir, sizeof dir, "%s/absent", tmp);
    ASSERT_EQ(pile_data_open(&d, dir, 0, 0.01, &err), PILE_ENOENT);

    TEST("data: a shard of another tokenizer refused, both named");
    snprintf(dir, sizeof dir, "%s/mixed", tmp);
    if (mkdir(dir, 0755) != 0) PILE_FAIL_("cannot mkdir '%s'", dir);
    OK(write_shard(dir, "train-00000.shard", shard0, 5, 0, 0, L, &err), &err);
    OK(write_shard(dir, "val-00000.shard", shard1, 4, 5, 1, L, &err), &err);
    ASSERT_EQ(pile_data_open(&d, dir, 0, 0.01, &err), PILE_EMISMATCH);
    ASSERT(strstr(err.msg, "train-00000.shard") && strstr(err.msg, "val-00000.shard") &&
           strstr(err.msg, "tokenizer fingerprint"));
    ASSERT(d == NULL);

    TEST("data: a shard of another max_length refused, both named");
    OK(write_shard(dir, "val-00000.shard", shard0 + 2, 2, 5, 0, L - 1, &err), &err);
    ASSERT_EQ(pile_data_open(&d, dir, 0, 0.01, &err), PILE_EMISMATCH);
    ASSERT(strstr(err.msg, "train-00000.shard") && strstr(err.msg, "val-00000.shard") &&
           strstr(err.msg, "max_length (15 vs 16)"));

    TEST("data: manifest.json names the tokenizer; one of another fingerprint refused");
    OK(write_shard(dir, "val-00000.shard", shard1, 4, 5, 0, L, &err), &err);
    write_file("mixed/manifest.json", "{\"options\": {\"tokenizer\": \"gpt2\",\n"
                                      " \"tokenizer_fingerprint\": \"000102030405060708090a0b0c0d0e0f\"}}");
    OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
    if (d) ASSERT_STR_EQ(pile_data_get_info(d)->tokenizer_spec, "gpt2");
    pile_data_close(d);
    d = NULL;
    write_file("mixed/manifest.json", "{\"options\": {\"tokenizer\": \"gpt2\",\n"
                                      " \"tokenizer_fingerprint\": \"ff0102030405060708090a0b0c0d0e0f\"}}");
    ASSERT_EQ(pile_data_open(&d, dir, 0, 0.3, &err), PILE_EMISMATCH);
    ASSERT(strstr(err.msg, "manifest.json") && strstr(err.msg, "train-00000.shard"));
    ASSERT(d == NULL);
    snprintf(want, sizeof want, "%s/manifest.json", dir);
    unlink(want);

    TEST("data: a manifest tokenizer too long to keep refused, not dropped");
    {
        char text[1400], name[1100];
        memset(name, 'x', 1030);
        name[1030] = '\0';
        snprintf(text, sizeof text, "{\"options\": {\"tokenizer\": \"%s\"}}", name);
        write_file("mixed/manifest.json", text);
        ASSERT_EQ(pile_data_open(&d, dir, 0, 0.3, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "manifest.json") && strstr(err.msg, "options.tokenizer"));
        ASSERT(d == NULL);
        pile_data_close(d);
        d = NULL;
        snprintf(want, sizeof want, "%s/manifest.json", dir);
        unlink(want);
    }

    TEST("data: val shards without a sample: the held-out share instead");
    {
        static const row_spec tiny[] = {{1, 1, {0}}, {1, 1, {0}}};
        OK(write_shard(dir, "val-00000.shard", tiny, 2, 5, 0, L, &err), &err);
        OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
        if (d) {
            const pile_data_info *in = pile_data_get_info(d);
            ASSERT_EQ(in->val_held_out, 1);
            ASSERT_EQ(in->val_samples, 2); /* ceil(0.3 x 4) */
            ASSERT_EQ(in->train_samples, 2);
            ASSERT(in->val_tokens > 0);
            int32_t tok[L], tgt[L];
            ASSERT(pile_data_sample(d, 1, 0, 0, tok, tgt, NULL, NULL) > 0);
            pile_data_close(d);
            d = NULL;
        }
        OK(pile_data_open(&d, dir, 0, 0.0, &err), &err);
        if (d) ASSERT_EQ(pile_data_get_info(d)->val_samples, 0);
        pile_data_close(d);
        d = NULL;
    }

    TEST("data: val shards used as validation");
    OK(write_shard(dir, "val-00000.shard", shard1, 4, 5, 0, L, &err), &err);
    OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
    if (d) {
        const pile_data_info *in = pile_data_get_info(d);
        ASSERT_EQ(in->val_held_out, 0);
        ASSERT_EQ(in->val_shards, 1);
        ASSERT_EQ(in->train_samples, 4);
        ASSERT_EQ(in->val_samples, 4);
        int32_t tok[L], tgt[L];
        ASSERT_EQ(pile_data_sample(d, 1, 1, 0, tok, tgt, NULL, NULL), 1);
        ASSERT_EQ(tok[0], tok_at(6, 0));
        ASSERT_EQ(tgt[0], tok_at(6, 1));
        pile_data_close(d);
    }
}

/* Flips one bit of row `row`'s token at position p, in place. */
static void flip_token_bit(const char *path, uint64_t row, uint32_t p)
{
    FILE *f = fopen(path, "r+b");
    long off = 4096 + (long)(row * L + p) * 2; /* 2-byte tokens, data at 4096 (FORMAT.md) */
    int c = f && fseek(f, off, SEEK_SET) == 0 ? fgetc(f) : EOF;
    if (c == EOF || fseek(f, off, SEEK_SET) != 0 || fputc(c ^ 0x01, f) == EOF) PILE_FAIL_("cannot flip a byte of '%s'", path);
    if (f) fclose(f);
}

static void test_data_checks(void)
{
    pile_err err;
    pile_data *d = NULL;
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s/checks", tmp);
    if (mkdir(dir, 0755) != 0) PILE_FAIL_("cannot mkdir '%s'", dir);

    TEST("data: shards of format versions 1 and 2 mixed: read alike, the version 1 one counted as unverified");
    write_version = 1;
    OK(write_shard(dir, "train-00000.shard", shard0, 5, 0, 0, L, &err), &err);
    write_version = 0;
    OK(write_shard(dir, "train-00001.shard", shard1, 4, 5, 0, L, &err), &err);
    OK(pile_data_open(&d, dir, 0, 0.0, &err), &err);
    if (!d) return;
    ASSERT_EQ(pile_data_get_info(d)->unverified_shards, 1);
    check_against_reference(d, L, 8);
    ASSERT_EQ(pile_data_corrupt_rows(d), 0);
    pile_data_close(d);

    TEST("data: a flipped bit in a version 2 row: its samples refused, named, masked; counted once");
    snprintf(path, sizeof path, "%s/train-00001.shard", dir);
    flip_token_bit(path, 2, 7); /* shard1's row 2: 16 tokens, the 7th sample */
    /* with seq_len 4 the row has 4 windows: samples 19..22 (train-00000 has 4+4+2+0+4, then 4 and 1) */
    OK(pile_data_open(&d, dir, 4, 0.0, &err), &err);
    if (!d) return;
    int32_t tok[L], tgt[L], ds[L];
    for (int pass = 0; pass < 2; pass++)
        for (uint64_t i = 0; i < pile_data_get_info(d)->train_samples; i++) {
            for (int t = 0; t < 4; t++) tok[t] = tgt[t] = ds[t] = 12345;
            int n = pile_data_sample(d, 0, i, 0, tok, tgt, ds, &err);
            int bad = i >= 19 && i < 23;
            if (!bad) {
                if (n <= 0) PILE_FAIL_("sample %" PRIu64 ": %d (%s)", i, n, n < 0 ? err.msg : "");
                continue;
            }
            ASSERT_EQ(n, PILE_ECORRUPT);
            ASSERT(strstr(err.msg, path) != NULL);
            ASSERT(strstr(err.msg, "row 2 fails its checksum (computed ") != NULL);
            ASSERT(strstr(err.msg, ", the shard records ") != NULL);
            for (int t = 0; t < 4; t++) {
                ASSERT_EQ(tok[t], VOCAB - 1);
                ASSERT_EQ(tgt[t], -1);
                ASSERT_EQ(ds[t], 0);
            }
        }
    ASSERT_EQ(pile_data_corrupt_rows(d), 1);
    pile_data_close(d);

    TEST("data: a flipped bit in a version 1 row is not seen (no checksum to see it by)");
    snprintf(path, sizeof path, "%s/train-00000.shard", dir);
    flip_token_bit(path, 0, 3);
    OK(pile_data_open(&d, dir, 0, 0.0, &err), &err);
    if (!d) return;
    ASSERT_EQ(pile_data_sample(d, 0, 0, 0, tok, tgt, ds, &err), 15);
    ASSERT_EQ((uint32_t)tok[3], tok_at(0, 3) ^ 1);
    ASSERT_EQ(pile_data_corrupt_rows(d), 0);
    pile_data_close(d);
}

static void log_drop(void *ctx, const char *msg)
{
    (void)ctx;
    (void)msg;
}

static void test_data_prep(void)
{
    TEST("data: pile-prep output of the bundled sample");
    const char *root = getenv("PILE_SOURCE_ROOT");
    char src[700], copy[700], out[700];
    snprintf(src, sizeof src, "%s/data/sample/val.jsonl.zst", root && *root ? root : ".");
    FILE *in = fopen(src, "rb");
    if (!in) {
        snprintf(src, sizeof src, "%s/val.jsonl.zst", pile_test_shared());
        in = fopen(src, "rb");
    }
    if (!in) {
        printf("# no sample data (%s): prep case skipped\n", src);
        return;
    }
    /* the same documents under a train name, so both splits exist */
    snprintf(copy, sizeof copy, "%s/docs.jsonl.zst", tmp);
    FILE *o = fopen(copy, "wb");
    char buf[65536];
    size_t n;
    while (o && (n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, o);
    fclose(in);
    if (o) fclose(o);
    pile_err err;
    pile_prep_inputs inputs = {0};
    OK(pile_prep_inputs_add(&inputs, copy, &err), &err);
    OK(pile_prep_inputs_add(&inputs, src, &err), &err);
    snprintf(out, sizeof out, "%s/prep", tmp);
    pile_prep_opts opts = {0};
    opts.inputs = inputs.v;
    opts.n_inputs = inputs.n;
    opts.output_dir = out;
    opts.tokenizer_spec = "bytes";
    opts.max_length = 64;
    opts.shard_bytes = 64 * 1024;
    opts.threads = 1;
    opts.log = log_drop;
    int rc = pile_prep_run(&opts, NULL, &err);
    OK(rc, &err);
    pile_prep_inputs_free(&inputs);
    if (rc < 0) return;
    pile_data *d = NULL;
    OK(pile_data_open(&d, out, 32, 0.01, &err), &err);
    if (!d) return;
    const pile_data_info *info = pile_data_get_info(d);
    ASSERT_STR_EQ(info->tokenizer_spec, "bytes");
    ASSERT(info->train_shards > 1);
    ASSERT(info->val_shards >= 1);
    ASSERT_EQ(info->val_held_out, 0);
    ASSERT_EQ(info->max_length, 64);
    /* the same documents in both splits: train and val samples alike */
    ASSERT_EQ(info->train_samples, info->val_samples);
    ASSERT_EQ(info->train_tokens, info->val_tokens);
    /* concat packing: every row full but the last, two windows a row */
    uint64_t rows = (info->train_tokens + 63) / 64;
    ASSERT(info->train_samples == 2 * rows || info->train_samples == 2 * rows - 1);
    int32_t tok[32], tgt[32], ds[32], vt[32], vg[32], vd[32];
    uint64_t targets = 0;
    int same = 1, eot_seen = 0;
    for (uint64_t i = 0; i < info->train_samples; i++) {
        int k = pile_data_sample(d, 0, i, 1, tok, tgt, ds, NULL);
        int kv = pile_data_sample(d, 1, i, 1, vt, vg, vd, NULL);
        targets += (uint64_t)k;
        if (k != kv || memcmp(tok, vt, sizeof tok) || memcmp(tgt, vg, sizeof tgt) || memcmp(ds, vd, sizeof ds)) same = 0;
        for (int t = 0; t + 1 < 32; t++) {
            if (tgt[t] >= 0 && tgt[t] != tok[t + 1]) same = 0;
            if (tok[t] == (int32_t)info->eot_id && t + 1 < 32 && tok[t + 1] != (int32_t)info->pad_id) {
                /* after an end-of-text a document starts: no loss on it, doc_start moves */
                eot_seen++;
                if (tgt[t] != -1 || ds[t + 1] != t + 1) same = 0;
            }
        }
    }
    ASSERT(same);
    ASSERT(eot_seen >= 5);
    ASSERT(targets > info->train_tokens / 2);
    pile_data_close(d);
}

static void test_data_identity(void)
{
    pile_err err;
    pile_data *d = NULL;
    pile_buf id = {0};
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s/ident", tmp);
    TEST("data: the shards' identity; a shard changed, added or missing named");
    if (mkdir(dir, 0755) != 0) PILE_FAIL_("cannot mkdir '%s'", dir);
    OK(write_shard(dir, "train-00000.shard", shard0, 5, 0, 0, L, &err), &err);
    OK(write_shard(dir, "train-00001.shard", shard1, 4, 5, 0, L, &err), &err);
    OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
    if (!d) return;
    OK(pile_data_identity(d, &id), &err);
    ASSERT(id.data && strstr(id.data, "\"fingerprint\": \"") && strstr(id.data, "\"file\": \"train-00001.shard\"") &&
           strstr(id.data, "\"rows\": 4"));
    OK(pile_data_identity_check(d, id.data, &err), &err);
    pile_data_close(d);
    d = NULL;
    /* a shard rewritten with other tokens, as many rows */
    OK(write_shard(dir, "train-00001.shard", shard1, 4, 6, 0, L, &err), &err);
    OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
    if (d) {
        ASSERT_EQ(pile_data_identity_check(d, id.data, &err), PILE_EMISMATCH);
        ASSERT(strstr(err.msg, "'train-00001.shard' has 4 rows") && strstr(err.msg, "data checksum"));
    }
    pile_data_close(d);
    d = NULL;
    OK(write_shard(dir, "train-00001.shard", shard1, 4, 5, 0, L, &err), &err);
    OK(write_shard(dir, "train-00002.shard", shard1, 2, 9, 0, L, &err), &err);
    OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
    if (d) {
        ASSERT_EQ(pile_data_identity_check(d, id.data, &err), PILE_EMISMATCH);
        ASSERT(strstr(err.msg, "'train-00002.shard' is new"));
    }
    pile_data_close(d);
    d = NULL;
    snprintf(path, sizeof path, "%s/train-00001.shard", dir);
    unlink(path);
    OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
    if (d) {
        ASSERT_EQ(pile_data_identity_check(d, id.data, &err), PILE_EMISMATCH);
        ASSERT(strstr(err.msg, "'train-00001.shard', one of the checkpoint's 2 shards, is missing"));
        ASSERT_EQ(pile_data_identity_check(d, "{\"shards\": []}", &err), PILE_EFORMAT);
    }
    pile_data_close(d);
    d = NULL;

    TEST("data: a folder pile-prep did not finish (\"complete\": false) refused, saying what to run");
    write_file("ident/manifest.json", "{\"complete\": false, \"options\": {\"tokenizer\": \"bytes\"}}");
    ASSERT_EQ(pile_data_open(&d, dir, 0, 0.3, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "unfinished") && strstr(err.msg, "\"complete\": false") &&
           strstr(err.msg, "run the same pile-prep command again"));
    ASSERT(d == NULL);
    write_file("ident/manifest.json", "{\"complete\": true, \"options\": {\"tokenizer\": \"bytes\"}}");
    OK(pile_data_open(&d, dir, 0, 0.3, &err), &err);
    pile_data_close(d);
    pile_buf_free(&id);
}

static void test_data(void)
{
    pile_err err;
    char dir[700];
    snprintf(dir, sizeof dir, "%s/shards", tmp);
    TEST("data: hand-made shards written");
    if (mkdir(dir, 0755) != 0) PILE_FAIL_("cannot mkdir '%s'", dir);
    OK(write_shard(dir, "train-00000.shard", shard0, sizeof shard0 / sizeof shard0[0], 0, 0, L, &err), &err);
    OK(write_shard(dir, "train-00001.shard", shard1, sizeof shard1 / sizeof shard1[0], 5, 0, L, &err), &err);
    write_file("shards/test-00000.shard", "ignored");
    write_file("shards/train-00002.shard.tmp", "ignored");
    test_data_windows(dir);
    test_data_order_and_split(dir);
    test_data_folders();
    test_data_refusals();
    test_data_checks();
    test_data_identity();
    test_data_epoch_order();
    test_data_prep();
}

int main(void)
{
    if (!pile_test_tmpdir(tmp, sizeof tmp, "train-config")) pile_test_skip_all("cannot make a temporary folder");
    test_defaults();
    test_json();
    test_deepspeed();
    test_flags();
    test_round_trip();
    test_check();
    test_precision();
    test_data();
    return TEST_DONE();
}
