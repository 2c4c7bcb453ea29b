/* pile_comm_env_parse: the rank, world size, local rank and rank 0's
 * address from the variables each launcher sets (comm.h lists them), read
 * from an environ-style array so that tests hand in any environment. A
 * launcher's variables are all-or-nothing and checked against each other:
 * a half-set or contradictory environment is an error that names the
 * variables, never a silent world of one. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"

extern char **environ;

const char *pile_comm_launcher_name(pile_comm_launcher l)
{
    switch (l) {
    case PILE_COMM_LAUNCHER_NONE: return "none";
    case PILE_COMM_LAUNCHER_TORCHRUN: return "torchrun";
    case PILE_COMM_LAUNCHER_SLURM: return "slurm";
    case PILE_COMM_LAUNCHER_OPENMPI: return "openmpi";
    case PILE_COMM_LAUNCHER_PMI: return "pmi";
    }
    return "?";
}

static const char *env_get(const char *const *envp, const char *name)
{
    const size_t n = strlen(name);
    for (; *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=') return *envp + n + 1;
    return NULL;
}

/* *v = the whole number in variable `name` (0 .. INT_MAX); *v untouched and
 * 0 returned when it is not set. */
static int env_int(const char *const *envp, const char *name, pile_comm_launcher l, int *v, pile_err *err)
{
    const char *s = env_get(envp, name);
    if (!s) return 0;
    char *end = NULL;
    errno = 0;
    long x = strtol(s, &end, 10);
    PILE_RETURN_IF(!*s || *end || errno || x < 0 || x > INT_MAX || s[0] == '+' || s[0] == '-' || s[0] == ' ', err,
                   PILE_EINVAL, "bad %s='%s' in the environment (%s): not a whole number", name, s,
                   pile_comm_launcher_name(l));
    *v = (int)x;
    return 0;
}

/* rank and size are set together or not at all; *have says which. */
static int env_pair(const char *const *envp, const char *rank_name, const char *size_name, pile_comm_launcher l,
                    int *rank, int *size, int *have, pile_err *err)
{
    const int r = env_get(envp, rank_name) != NULL, s = env_get(envp, size_name) != NULL;
    PILE_RETURN_IF(r != s, err, PILE_EINVAL, "%s is set in the environment but %s is not (%s sets both)",
                   r ? rank_name : size_name, r ? size_name : rank_name, pile_comm_launcher_name(l));
    *have = r;
    PILE_FORWARD_IF_ERR(env_int(envp, rank_name, l, rank, err));
    PILE_FORWARD_IF_ERR(env_int(envp, size_name, l, size, err));
    PILE_RETURN_IF(r && *size < 1, err, PILE_EINVAL, "bad %s=%d in the environment (%s): no ranks", size_name, *size,
                   pile_comm_launcher_name(l));
    PILE_RETURN_IF(r && *rank >= *size, err, PILE_EINVAL,
                   "bad %s=%d in the environment (%s): %s=%d makes ranks 0 to %d", rank_name, *rank,
                   pile_comm_launcher_name(l), size_name, *size, *size - 1);
    return 0;
}

int pile__comm_first_host(const char *list, char *out, size_t cap, pile_err *err)
{
    size_t n = 0;
    const char *p = list;
    /* the first entry ends at a comma outside brackets; within each
     * bracket, its first value ("01" of "[01-04,07]") */
    while (*p && *p != ',') {
        if (*p == '[') {
            const char *q = ++p;
            while (*q && *q != '-' && *q != ',' && *q != ']') q++;
            const char *close = strchr(p, ']');
            PILE_RETURN_IF(!close || q == p, err, PILE_EINVAL, "cannot read the node list '%s': bad brackets", list);
            for (; p < q; p++) {
                PILE_RETURN_IF(n + 1 >= cap, err, PILE_EINVAL, "cannot read the node list '%s': host name too long",
                               list);
                out[n++] = *p;
            }
            p = close + 1;
            continue;
        }
        PILE_RETURN_IF(*p == ']', err, PILE_EINVAL, "cannot read the node list '%s': bad brackets", list);
        PILE_RETURN_IF(n + 1 >= cap, err, PILE_EINVAL, "cannot read the node list '%s': host name too long", list);
        out[n++] = *p++;
    }
    PILE_RETURN_IF(n == 0, err, PILE_EINVAL, "cannot read the node list '%s': no host", list);
    out[n] = '\0';
    return 0;
}

/* Tasks on node `node` from Slurm's "2(x3),1" (two tasks on each of the
 * first three nodes, one on the fourth); 0 when the list does not say. */
static int slurm_tasks_on_node(const char *list, int node)
{
    const char *p = list;
    while (*p) {
        char *end;
        long tasks = strtol(p, &end, 10), times = 1;
        if (end == p || tasks < 1 || tasks > INT_MAX) return 0;
        p = end;
        if (*p == '(') {
            if (p[1] != 'x') return 0;
            times = strtol(p + 2, &end, 10);
            if (end == p + 2 || *end != ')' || times < 1) return 0;
            p = end + 1;
        }
        if (node < times) return (int)tasks;
        node -= (int)times;
        if (*p == ',') p++;
        else if (*p) return 0;
    }
    return 0;
}

static int parse_master(const char *const *envp, pile_comm_env *env, pile_err *err)
{
    const char *addr = env_get(envp, "MASTER_ADDR");
    const pile_comm_launcher l = env->launcher;
    if (addr) {
        PILE_RETURN_IF(!*addr || strlen(addr) >= sizeof env->master_addr, err, PILE_EINVAL,
                       "bad MASTER_ADDR='%s' in the environment (%s)", addr, pile_comm_launcher_name(l));
        strcpy(env->master_addr, addr);
    } else if (l == PILE_COMM_LAUNCHER_SLURM) {
        const char *list = env_get(envp, "SLURM_JOB_NODELIST");
        if (!list) list = env_get(envp, "SLURM_NODELIST");
        PILE_RETURN_IF(!list, err, PILE_EINVAL,
                       "cannot find rank 0's host: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set (slurm)");
        PILE_FORWARD_IF_ERR(pile__comm_first_host(list, env->master_addr, sizeof env->master_addr, err));
    }
    int port = l == PILE_COMM_LAUNCHER_SLURM ? 29500 : 0;
    PILE_FORWARD_IF_ERR(env_int(envp, "MASTER_PORT", l, &port, err));
    /* the rendezvous listens on MASTER_PORT + 1, which must be a port too */
    PILE_RETURN_IF(env_get(envp, "MASTER_PORT") && (port < 1 || port > 65534), err, PILE_EINVAL,
                   "bad MASTER_PORT=%d in the environment (%s): a port from 1 to 65534 (the rendezvous takes the "
                   "next one)",
                   port, pile_comm_launcher_name(l));
    env->master_port = port;
    PILE_RETURN_IF(l == PILE_COMM_LAUNCHER_TORCHRUN && env->world_size > 1 && (!addr || !port), err, PILE_EINVAL,
                   "RANK and WORLD_SIZE are set in the environment but %s is not (torchrun sets MASTER_ADDR and "
                   "MASTER_PORT)",
                   addr ? "MASTER_PORT" : "MASTER_ADDR");
    return 0;
}

int pile_comm_env_parse(pile_comm_env *env, const char *const *envp, pile_err *err)
{
    memset(env, 0, sizeof *env);
    env->world_size = env->local_world_size = 1;
    if (!envp) envp = (const char *const *)environ;
    static const struct {
        pile_comm_launcher l;
        const char *rank, *size, *local_rank, *local_size;
        int mpi;
    } launchers[] = {
        {PILE_COMM_LAUNCHER_OPENMPI, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
         "OMPI_COMM_WORLD_LOCAL_SIZE", 1},
        {PILE_COMM_LAUNCHER_PMI, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", 1},
        {PILE_COMM_LAUNCHER_TORCHRUN, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", 0},
        {PILE_COMM_LAUNCHER_SLURM, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", NULL, 0},
    };
    for (size_t i = 0; i < sizeof launchers / sizeof launchers[0]; i++) {
        const pile_comm_launcher l = launchers[i].l;
        int have = 0;
        /* an sbatch script sets SLURM_PROCID and SLURM_NTASKS for the job
         * it will start, but is itself one process: only srun's steps
         * (which set SLURM_STEP_ID) are ranks */
        if (l == PILE_COMM_LAUNCHER_SLURM && !env_get(envp, "SLURM_STEP_ID") && !env_get(envp, "SLURM_STEPID"))
            continue;
        PILE_FORWARD_IF_ERR(env_pair(envp, launchers[i].rank, launchers[i].size, l, &env->rank, &env->world_size,
                                     &have, err));
        if (!have) continue;
        env->launcher = l;
        env->mpi = launchers[i].mpi;
        env->local_rank = env->rank;
        env->local_world_size = env->world_size;
        if (l == PILE_COMM_LAUNCHER_SLURM) {
            /* srun --mpi=pmix gives MPI its own variables */
            env->mpi = env_get(envp, "PMIX_RANK") != NULL;
            PILE_RETURN_IF(!env_get(envp, "SLURM_LOCALID"), err, PILE_EINVAL,
                           "SLURM_PROCID is set in the environment but SLURM_LOCALID is not (srun sets both)");
            PILE_FORWARD_IF_ERR(env_int(envp, "SLURM_LOCALID", l, &env->local_rank, err));
            int node = 0, tasks = 0;
            PILE_FORWARD_IF_ERR(env_int(envp, "SLURM_NODEID", l, &node, err));
            const char *per_node = env_get(envp, "SLURM_STEP_TASKS_PER_NODE");
            if (!per_node) per_node = env_get(envp, "SLURM_TASKS_PER_NODE");
            if (per_node) tasks = slurm_tasks_on_node(per_node, node);
            env->local_world_size = tasks > 0 ? tasks : env->world_size;
        } else {
            int have_local = 0;
            PILE_FORWARD_IF_ERR(env_pair(envp, launchers[i].local_rank, launchers[i].local_size, l,
                                         &env->local_rank, &env->local_world_size, &have_local, err));
        }
        PILE_RETURN_IF(env->local_rank >= env->local_world_size, err, PILE_EINVAL,
                       "bad local rank %d of %d in the environment (%s)", env->local_rank, env->local_world_size,
                       pile_comm_launcher_name(l));
        PILE_RETURN_IF(env->local_world_size > env->world_size, err, PILE_EINVAL,
                       "bad environment (%s): %d ranks on this machine but %d in the whole job", pile_comm_launcher_name(l),
                       env->local_world_size, env->world_size);
        if (!env->mpi) PILE_FORWARD_IF_ERR(parse_master(envp, env, err));
        return 0;
    }
    return 0;
}

int pile_comm_local_device(const pile_comm_env *env, int n_devices, const char *const *envp, const char *what,
                           int *device, pile_err *err)
{
    *device = -1;
    if (!envp) envp = (const char *const *)environ;
    if (env->local_rank < n_devices) {
        *device = env->local_rank;
        return 0;
    }
    const char *visible = env_get(envp, "CUDA_VISIBLE_DEVICES");
    /* A launcher that binds one GPU to each rank (Slurm's --gpus-per-task
     * 1, --gpu-bind=single:1, site wrappers) shows it as device 0 through
     * CUDA_VISIBLE_DEVICES naming that one device: it is this rank's.
     * (Two ranks given the same one are NCCL's to refuse: "Duplicate GPU
     * detected".) */
    if (n_devices == 1 && visible && *visible && !strchr(visible, ',')) {
        *device = 0;
        return 0;
    }
    return pile_err_set(err, PILE_EINVAL,
                        "%s %d for local rank %d (%s): this machine shows %d CUDA device%s%s%s%s; start at most %d "
                        "rank%s per machine, each seeing all of its GPUs",
                        what, env->local_rank, env->local_rank, pile_comm_launcher_name(env->launcher), n_devices,
                        n_devices == 1 ? "" : "s", visible ? " (CUDA_VISIBLE_DEVICES=" : "", visible ? visible : "",
                        visible ? ")" : "", n_devices, n_devices == 1 ? "" : "s");
}
