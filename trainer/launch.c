/* `pile-trainer launch`: N ranks on this machine with the environment
 * torchrun --standalone --nproc_per_node N gives them (RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so that they
 * meet through the "tcp" communicator's rendezvous (trainer/comm/comm.h;
 * on GPUs "nccl" bootstraps over it, each rank on its LOCAL_RANK's device).
 * Part of the command line, not the library: it forks, waits, signals and
 * prints. The ranks run in a process group of their own, so that a
 * terminal's Ctrl-C reaches them once, passed on by the launcher, and they
 * die with it (PR_SET_PDEATHSIG) if it is killed. One failed rank makes
 * the others' collectives fail by themselves; those that have not ended
 * after the grace period get SIGTERM, and SIGKILL after another. */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"

static const char launch_help[] =
    "usage: pile-trainer launch --nproc N [launch options] [--] [train options]\n"
    "       pile-trainer launch --nproc N [launch options] --run PROGRAM [ARGS...]\n"
    "\n"
    "Starts N ranks of `pile-trainer train [train options]` on this machine, with\n"
    "the environment `torchrun --standalone --nproc_per_node N` gives (RANK,\n"
    "WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT);\n"
    "the ranks meet over TCP on MASTER_PORT + 1 (on GPUs, --backend cuda, rank r\n"
    "takes device r and the gradients go over NCCL, set up through that meeting).\n"
    "Each rank's output goes to this terminal. SIGINT, SIGTERM and SIGHUP are passed\n"
    "on to every rank. When a rank fails, the others are given --grace seconds to\n"
    "end (their collectives fail by themselves), then SIGTERM, then after --grace\n"
    "more SIGKILL.\n"
    "For many machines, start pile-trainer with srun or mpirun instead (README).\n"
    "\n"
    "Launch options:\n"
    "  --nproc N           ranks to start (1 to 1024)\n"
    "  --master_port P     rank 0's port (default: a free one; the rendezvous takes P + 1)\n"
    "  --grace S           seconds between a rank's failure and SIGTERM to the rest,\n"
    "                      and between SIGTERM and SIGKILL (default 10)\n"
    "  --run PROGRAM ...   start PROGRAM with ARGS instead of pile-trainer train\n"
    "                      (torchrun's --no-python)\n"
    "OMP_NUM_THREADS, when not set, becomes the cores divided by N for each rank.\n"
    "\n"
    "Exit status: 0 when every rank exits 0; otherwise the status of the first failed\n"
    "rank it saw end (128 + the signal for one killed by a signal); 2 bad usage.\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "pile-trainer launch: ");
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'pile-trainer launch --help' for more information.\n", stderr);
    return 2;
}

/* A port P such that P and P + 1 are free on this machine now. */
static int free_port_pair(void)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sa;
        int port = 0;
        if (a >= 0 && b >= 0 && bind(a, (struct sockaddr *)&sa, sizeof sa) == 0 &&
            getsockname(a, (struct sockaddr *)&sa, &len) == 0) {
            port = ntohs(sa.sin_port);
            sa.sin_port = htons((uint16_t)(port + 1));
            if (port > 65534 || bind(b, (struct sockaddr *)&sa, sizeof sa) != 0) port = 0;
        }
        if (a >= 0) close(a);
        if (b >= 0) close(b);
        if (port) return port;
    }
    return 0;
}

static void describe(int status, char *out, size_t cap)
{
    if (WIFEXITED(status)) snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, cap, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(out, cap, "ended (status %#x)", status);
}

static int exit_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
}

static void signal_all(const pid_t *pid, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (pid[i] > 0) kill(pid[i], sig);
}

int pile_trainer_launch(int argc, char **argv)
{
    long nproc = 0, master_port = 0;
    double grace = 10;
    int first = argc; /* the ranks' own arguments start here */
    int run = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(launch_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--")) {
            first = i + 1;
            break;
        }
        if (!strcmp(a, "--run")) {
            if (i + 1 >= argc) return usage("%s needs a program", a);
            run = 1;
            first = i + 1;
            break;
        }
        const char *name = a, *v = NULL;
        const char *eq = strchr(a, '=');
        char key[32];
        if (eq && (size_t)(eq - a) < sizeof key) {
            memcpy(key, a, (size_t)(eq - a));
            key[eq - a] = '\0';
            name = key;
            v = eq + 1;
        }
        const int is_nproc = !strcmp(name, "--nproc") || !strcmp(name, "--nproc_per_node") ||
                             !strcmp(name, "--nproc-per-node");
        const int is_port = !strcmp(name, "--master_port") || !strcmp(name, "--master-port");
        const int is_grace = !strcmp(name, "--grace");
        if (!is_nproc && !is_port && !is_grace) {
            first = i; /* the first training option: the rest are the ranks' */
            break;
        }
        if (!v) {
            if (i + 1 >= argc) return usage("option '%s' needs a value", a);
            v = argv[++i];
        }
        char *end;
        errno = 0;
        if (is_grace) {
            grace = strtod(v, &end);
            if (errno || *end || !(grace >= 0) || grace > 86400) return usage("bad --grace '%s' (seconds)", v);
            continue;
        }
        long x = strtol(v, &end, 10);
        if (errno || *end || !*v) return usage("bad number '%s'", v);
        if (is_nproc) {
            if (x < 1 || x > 1024) return usage("bad --nproc '%s' (1 to 1024)", v);
            nproc = x;
        } else {
            if (x < 1 || x > 65534) return usage("bad --master_port '%s' (1 to 65534: the rendezvous takes the next)", v);
            master_port = x;
        }
    }
    if (!nproc) return usage("%smissing --nproc N", "");
    if (!master_port && !(master_port = free_port_pair())) {
        fputs("pile-trainer launch: cannot find a free port pair on 127.0.0.1\n", stderr);
        return 1;
    }

    /* each rank's argv: PROGRAM ARGS, or this program's `train` and the rest */
    const int nargs = argc - first;
    char **args = calloc((size_t)nargs + 3, sizeof *args);
    pid_t *pid = calloc((size_t)nproc, sizeof *pid);
    if (!args || !pid) {
        fputs("pile-trainer launch: out of memory\n", stderr);
        return 1;
    }
    int k = 0;
    const char *prog = run ? argv[first] : "/proc/self/exe";
    if (!run) {
        args[k++] = argv[0];
        args[k++] = "train";
        if (first < argc && !strcmp(argv[first], "train")) first++; /* `launch --nproc N train ...` too */
    }
    for (int i = first; i < argc; i++) args[k++] = argv[i];

    char threads[24] = "";
    if (!getenv("OMP_NUM_THREADS")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(threads, sizeof threads, "%ld", cores / nproc > 1 ? cores / nproc : 1);
        fprintf(stderr, "pile-trainer launch: OMP_NUM_THREADS=%s for each of the %ld ranks (set it to choose)\n",
                threads, nproc);
    }

    /* signals come to sigtimedwait below, not to handlers */
    sigset_t wanted, old;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGCHLD);
    sigaddset(&wanted, SIGINT);
    sigaddset(&wanted, SIGTERM);
    sigaddset(&wanted, SIGHUP);
    sigprocmask(SIG_BLOCK, &wanted, &old);
    const pid_t launcher = getpid();
    int status = 0, failed_rank = -1, alive = 0;
    for (long r = 0; r < nproc; r++) {
        pid_t p = fork();
        if (p < 0) {
            fprintf(stderr, "pile-trainer launch: cannot start rank %ld: %s\n", r, strerror(errno));
            status = 1;
            failed_rank = (int)r;
            break;
        }
        if (p == 0) {
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != launcher) _exit(1); /* it died before prctl */
            sigprocmask(SIG_SETMASK, &old, NULL);
            char v[32];
            snprintf(v, sizeof v, "%ld", r);
            setenv("RANK", v, 1);
            setenv("LOCAL_RANK", v, 1);
            snprintf(v, sizeof v, "%ld", nproc);
            setenv("WORLD_SIZE", v, 1);
            setenv("LOCAL_WORLD_SIZE", v, 1);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            snprintf(v, sizeof v, "%ld", master_port);
            setenv("MASTER_PORT", v, 1);
            setenv("GROUP_RANK", "0", 1);
            if (threads[0]) setenv("OMP_NUM_THREADS", threads, 1);
            execv(prog, args);
            if (run) execvp(prog, args);
            fprintf(stderr, "pile-trainer launch: cannot start '%s' for rank %ld: %s\n", prog, r, strerror(errno));
            _exit(127);
        }
        pid[r] = p;
        alive++;
    }

    const double never = 1e300;
    double term_at = failed_rank >= 0 ? now_s() : never, kill_at = never;
    while (alive > 0) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            int r = 0;
            while (r < nproc && pid[r] != p) r++;
            if (r == nproc) continue;
            pid[r] = 0;
            alive--;
            if (st == 0) continue;
            /* every failure is named: of ranks failing together, the
             * first reaped is not always the first to fail */
            char what[96];
            describe(st, what, sizeof what);
            if (failed_rank < 0 && alive > 0) {
                fprintf(stderr,
                        "pile-trainer launch: rank %d (pid %d) %s; the other ranks get %g s to end before SIGTERM\n",
                        r, (int)p, what, grace);
                term_at = now_s() + grace;
            } else {
                fprintf(stderr, "pile-trainer launch: rank %d (pid %d) %s\n", r, (int)p, what);
            }
            if (failed_rank < 0) {
                failed_rank = r;
                status = exit_code(st);
            }
        }
        if (alive == 0) break;
        const double t = now_s();
        if (t >= term_at) {
            fprintf(stderr, "pile-trainer launch: sending SIGTERM to the %d ranks still running\n", alive);
            signal_all(pid, (int)nproc, SIGTERM);
            signal_all(pid, (int)nproc, SIGCONT); /* a stopped rank too */
            term_at = never;
            kill_at = t + grace;
        } else if (t >= kill_at) {
            fprintf(stderr, "pile-trainer launch: sending SIGKILL to the %d ranks still running\n", alive);
            signal_all(pid, (int)nproc, SIGKILL);
            kill_at = never;
        }
        double until = (term_at < kill_at ? term_at : kill_at) - now_s();
        if (until < 0) until = 0;
        if (until > 3600) until = 3600;
        struct timespec ts = {(time_t)until, (long)((until - (double)(time_t)until) * 1e9)};
        int sig = sigtimedwait(&wanted, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            fprintf(stderr, "pile-trainer launch: passing %s on to the ranks\n", strsignal(sig));
            signal_all(pid, (int)nproc, sig);
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(args);
    free(pid);
    return status;
}
