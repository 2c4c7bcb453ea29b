/* The "tcp" communicator: collectives between processes launched without
 * MPI (torchrun, srun, `pile-trainer launch`), over plain sockets.
 *
 * Rendezvous: rank 0 listens on MASTER_PORT + 1 (torchrun's agent holds
 * MASTER_PORT itself); every other rank connects, retrying until the
 * deadline, and says who it is and on which port it listens for its ring
 * neighbour; rank 0 checks the roll (each rank once, one world size) and
 * sends everyone the table of addresses. Each rank then connects to the
 * next rank's listener and accepts the previous one: a ring of one-way
 * connections (r -> r + 1), which the collectives use:
 *  - reduce-scatter: the ring algorithm (Patarasuk and Yuan, "Bandwidth
 *    optimal all-reduce algorithms for clusters of workstations", 2009):
 *    W - 1 steps, chunk c's partial sum travelling from rank c + 1 round
 *    to rank c, so every element is reduced in one fixed order (rank c + 1
 *    first, rank c last) whatever the timing: the same bits on every run;
 *  - all-gather: W - 1 steps of passing chunks on; allreduce is the two;
 *  - broadcast: a chain from the root, pipelined in pieces.
 * Each step sends and receives at once (poll over non-blocking sockets),
 * in pieces of SEG bytes so that the scratch stays small and the ring
 * stays busy. Every call starts with a header to the next rank, checked
 * against the receiver's own call: ranks that disagree about the call
 * fail with a message instead of reading garbage.
 *
 * Failures: a peer whose connection closes (it died or failed) or that
 * makes no progress for the timeout fails the call with a message naming
 * the operation and the peer; the communicator then closes its sockets,
 * so its neighbours fail at once too, and so on round the ring: every
 * rank fails within about one timeout, never hangs. A failed
 * communicator refuses every later call. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "comm_internal.h"

#define MAGIC 0x50434f4du /* "PCOM" */
#define VERSION 1u
/* bytes per piece of a step: the scratch of a reduction and the unit of
 * the broadcast's pipeline */
#define SEG ((size_t)1 << 20)

typedef struct tcp_comm {
    int rank, world;
    int prev_fd, next_fd; /* receive from rank - 1, send to rank + 1 */
    double timeout_s;
    uint64_t seq; /* calls made, checked in each header */
    int broken;
    char broken_msg[512];
    size_t *off, *len; /* a partition of the current call into W chunks */
    unsigned char *scratch; /* 2 * SEG: the partial sum received and the one to send */
} tcp_comm;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ------------------------------------------------------- addresses */

/* A rank's ring listener as the table carries it: family 4 or 6 (0: the
 * address this rank reached rank 0 at), the address, the port. */
typedef struct wire_addr {
    uint32_t family, port;
    unsigned char addr[16];
} wire_addr;

static void to_wire(const struct sockaddr_storage *ss, int port, wire_addr *w)
{
    memset(w, 0, sizeof *w);
    w->port = (uint32_t)port;
    if (ss->ss_family == AF_INET) {
        w->family = 4;
        memcpy(w->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) { /* an IPv4 peer seen through a dual-stack socket */
            w->family = 4;
            memcpy(w->addr, a->s6_addr + 12, 4);
        } else {
            w->family = 6;
            memcpy(w->addr, a, 16);
        }
    }
}

static socklen_t from_wire(const wire_addr *w, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (w->family == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)w->port);
        memcpy(&a->sin_addr, w->addr, 4);
        return sizeof *a;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)w->port);
    memcpy(&a->sin6_addr, w->addr, 16);
    return sizeof *a;
}

static void addr_text(const struct sockaddr_storage *in, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    /* an IPv4 peer of a dual-stack socket as people write it, not ::ffff:a.b.c.d */
    struct sockaddr_storage plain;
    const struct sockaddr_storage *ss = in;
    if (in->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)in)->sin6_addr)) {
        wire_addr w;
        to_wire(in, ntohs(((const struct sockaddr_in6 *)in)->sin6_port), &w);
        from_wire(&w, &plain);
        ss = &plain;
    }
    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
        snprintf(out, cap, "%s:%d", host, port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
        snprintf(out, cap, "[%s]:%d", host, port);
    }
}

/* A listening socket on every address of `family` (AF_INET6: dual-stack,
 * IPv4 too, where the system allows), port `port` (0: any); *bound_port
 * says which. */
static int listen_on(int family, int port, int *fd_out, int *bound_port, pile_err *err)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return pile_err_sys(err, PILE_EIO, errno, "cannot open a socket");
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons((uint16_t)port);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = htons((uint16_t)port);
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        return pile_err_sys(err, PILE_EIO, e, "cannot listen on port %d", port);
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *bound_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                : ((struct sockaddr_in6 *)&ss)->sin6_port);
    *fd_out = fd;
    return 0;
}

/* Waits until fd is ready for `events` or the deadline; 1 ready, 0 time
 * is up, -1 poll failed (errno). */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) return 0;
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (n > 0) return 1;
        if (n < 0 && errno != EINTR) return -1;
    }
}

/* All of buf over a blocking-style exchange with a deadline (the
 * rendezvous; the collectives use xfer). 0, or -1 with errno (ETIMEDOUT
 * when the deadline passed, EPIPE when the peer closed). */
static int io_all(int fd, void *buf, size_t n, int sending, double deadline)
{
    unsigned char *p = buf;
    while (n) {
        int w = wait_fd(fd, sending ? POLLOUT : POLLIN, deadline);
        if (w <= 0) {
            if (w == 0) errno = ETIMEDOUT;
            return -1;
        }
        ssize_t k = sending ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k == 0) {
            errno = EPIPE;
            return -1;
        }
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Connects to ss before the deadline (one attempt). 0, or -1 with errno. */
static int connect_until(const struct sockaddr *sa, socklen_t len, double deadline, int *fd_out)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (connect(fd, sa, len) < 0) {
        if (errno != EINPROGRESS) goto fail;
        int w = wait_fd(fd, POLLOUT, deadline);
        if (w <= 0) {
            if (w == 0) errno = ETIMEDOUT;
            goto fail;
        }
        int e = 0;
        socklen_t el = sizeof e;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e) {
            errno = e;
            goto fail;
        }
    }
    *fd_out = fd;
    return 0;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* ------------------------------------------------------- rendezvous */

enum { HELLO_MAGIC, HELLO_VERSION, HELLO_RANK, HELLO_WORLD, HELLO_PORT, HELLO_N };

/* Rank r > 0: reaches rank 0 at host:port, retrying refusals and names
 * that do not resolve yet until the deadline (rank 0 may start later). */
static int reach_rank0(const char *host, int port, double deadline, double timeout_s, int *fd_out, pile_err *err)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    double pause = 0.05;
    int last = 0;
    char why[160] = "";
    for (;;) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        int g = getaddrinfo(host, service, &hints, &res);
        if (g != 0) {
            snprintf(why, sizeof why, "%s", gai_strerror(g));
        } else {
            for (struct addrinfo *a = res; a; a = a->ai_next) {
                double until = now_s() + 5;
                if (connect_until(a->ai_addr, a->ai_addrlen, until < deadline ? until : deadline, fd_out) == 0) {
                    freeaddrinfo(res);
                    return 0;
                }
                last = errno;
                snprintf(why, sizeof why, "%s", strerror(last));
            }
            freeaddrinfo(res);
        }
        if (now_s() + pause > deadline) break;
        struct timespec ts = {(time_t)pause, (long)((pause - (double)(time_t)pause) * 1e9)};
        nanosleep(&ts, NULL);
        pause = pause * 2 < 1 ? pause * 2 : 1;
    }
    return pile_err_set(err, PILE_EIO,
                        "cannot reach rank 0 at '%s:%d' (MASTER_ADDR, MASTER_PORT + 1) within %g s (--dist_timeout): %s",
                        host, port, timeout_s, why);
}

/* Rank 0's side: gathers every rank's hello, checks the roll, answers
 * with the table (or the reason it refuses). table[0] is its own. */
static int serve_rendezvous(tcp_comm *t, int lfd, int port, int ring_port, double deadline, wire_addr *table,
                            pile_err *err)
{
    const int w = t->world;
    int *fds = malloc(sizeof *fds * (size_t)w);
    if (!fds) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (int i = 0; i < w; i++) fds[i] = -1;
    memset(&table[0], 0, sizeof table[0]);
    table[0].port = (uint32_t)ring_port; /* family 0: where the others reached rank 0 */
    int joined = 1, rc = 0;
    char refusal[256] = "";
    while (joined < w && !refusal[0]) {
        int ready = wait_fd(lfd, POLLIN, deadline);
        if (ready <= 0) {
            char missing[160] = "";
            size_t at = 0;
            for (int i = 1; i < w && at + 12 < sizeof missing; i++)
                if (fds[i] < 0) at += (size_t)snprintf(missing + at, sizeof missing - at, "%s%d", at ? ", " : "", i);
            rc = ready == 0 ? pile_err_set(err, PILE_EIO,
                                           "cannot gather the ranks on port %d (MASTER_PORT + 1): %d of %d joined "
                                           "within %g s (--dist_timeout); missing: %s",
                                           port, joined, w, t->timeout_s, missing)
                            : pile_err_sys(err, PILE_EIO, errno, "cannot wait for the ranks on port %d", port);
            goto done;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
        if (fd < 0) continue;
        uint32_t hello[HELLO_N];
        char who[80];
        addr_text(&peer, who, sizeof who);
        /* a rank greets at once: a connection that does not is not kept
         * waiting for long */
        const double greet = now_s() + 10 < deadline ? now_s() + 10 : deadline;
        if (io_all(fd, hello, sizeof hello, 0, greet) < 0 || hello[HELLO_MAGIC] != MAGIC) {
            close(fd); /* not one of ours (a port scan, a stale job): ignore it */
            continue;
        }
        const int r = (int)hello[HELLO_RANK];
        if (hello[HELLO_VERSION] != VERSION || (int)hello[HELLO_WORLD] != w || r < 1 || r >= w || fds[r] >= 0) {
            snprintf(refusal, sizeof refusal,
                     hello[HELLO_VERSION] != VERSION ? "a rank from %s runs another version of pile-trainer"
                     : (int)hello[HELLO_WORLD] != w  ? "a rank from %s counts another world size"
                     : r >= 1 && r < w               ? "two ranks claim the same rank (the second from %s)"
                                                     : "a rank from %s claims a rank outside the world",
                     who);
            close(fd);
            break;
        }
        fds[r] = fd;
        to_wire(&peer, (int)hello[HELLO_PORT], &table[r]);
        joined++;
    }
    /* the answer: a status word, then the table or the refusal */
    uint32_t status = refusal[0] ? 1u : 0u;
    for (int i = 1; i < w; i++) {
        if (fds[i] < 0) continue;
        if (io_all(fds[i], &status, sizeof status, 1, deadline) < 0 ||
            (status ? io_all(fds[i], refusal, sizeof refusal, 1, deadline)
                    : io_all(fds[i], table, sizeof *table * (size_t)w, 1, deadline)) < 0) {
            if (!refusal[0]) snprintf(refusal, sizeof refusal, "rank %d left during the rendezvous", i);
        }
    }
    if (refusal[0]) rc = pile_err_set(err, PILE_EIO, "cannot start the ranks: %s", refusal);
done:
    for (int i = 0; i < w; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(fds);
    return rc;
}

/* Every rank: joins the ring. *next and *prev are the sockets to rank + 1
 * and from rank - 1. */
static int join_ring(tcp_comm *t, int ring_fd, const wire_addr *table, const struct sockaddr_storage *rank0,
                     double deadline, pile_err *err)
{
    const int next = (t->rank + 1) % t->world, prev = (t->rank + t->world - 1) % t->world;
    struct sockaddr_storage ss;
    socklen_t len;
    if (table[next].family == 0) { /* rank 0: where this rank reached it, on its ring port */
        ss = *rank0;
        if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)table[next].port);
        else ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)table[next].port);
        len = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    } else {
        len = from_wire(&table[next], &ss);
    }
    char where[80];
    addr_text(&ss, where, sizeof where);
    if (connect_until((struct sockaddr *)&ss, len, deadline, &t->next_fd) < 0)
        return pile_err_sys(err, PILE_EIO, errno, "cannot connect to rank %d at '%s'", next, where);
    uint32_t me[2] = {MAGIC, (uint32_t)t->rank};
    if (io_all(t->next_fd, me, sizeof me, 1, deadline) < 0)
        return pile_err_sys(err, PILE_EIO, errno, "cannot greet rank %d at '%s'", next, where);
    for (;;) {
        int w = wait_fd(ring_fd, POLLIN, deadline);
        if (w <= 0)
            return pile_err_set(err, PILE_EIO, "cannot join the ring: rank %d did not connect within %g s", prev,
                                t->timeout_s);
        int fd = accept4(ring_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) continue;
        uint32_t them[2];
        if (io_all(fd, them, sizeof them, 0, deadline) == 0 && them[0] == MAGIC && (int)them[1] == prev) {
            t->prev_fd = fd;
            break;
        }
        close(fd);
    }
    int one = 1;
    setsockopt(t->next_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(t->prev_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (set_nonblocking(t->next_fd) < 0 || set_nonblocking(t->prev_fd) < 0)
        return pile_err_sys(err, PILE_EIO, errno, "cannot set up the ring's sockets");
    return 0;
}

static void tcp_close(void *impl);
static int tcp_barrier(void *impl, pile_err *err);

static int tcp_open(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err)
{
    const pile_comm_env *env = setup->env;
    *impl = NULL;
    tcp_comm *t = calloc(1, sizeof *t);
    if (!t) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    t->rank = env->rank;
    t->world = env->world_size;
    t->prev_fd = t->next_fd = -1;
    t->timeout_s = setup->timeout_s;
    t->off = calloc((size_t)t->world, sizeof *t->off);
    t->len = calloc((size_t)t->world, sizeof *t->len);
    t->scratch = malloc(2 * SEG);
    if (!t->off || !t->len || !t->scratch) {
        tcp_close(t);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    *rank = t->rank;
    *world_size = t->world;
    if (t->world == 1) { /* nothing to connect */
        *impl = t;
        return 0;
    }
    int rc = 0, lfd = -1, ring_fd = -1, rdv_fd = -1, ring_port = 0, dummy = 0;
    wire_addr *table = calloc((size_t)t->world, sizeof *table);
    struct sockaddr_storage rank0;
    memset(&rank0, 0, sizeof rank0);
    const double deadline = now_s() + t->timeout_s;
    const int port = env->master_port + 1;
    if (!table) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto done;
    }
    if (!env->master_addr[0] || env->master_port < 1 || env->master_port > 65534) {
        rc = pile_err_set(err, PILE_EINVAL,
                          "cannot open communicator 'tcp' for rank %d of %d: no rank 0 address (set MASTER_ADDR and "
                          "MASTER_PORT)",
                          t->rank, t->world);
        goto done;
    }
    if (t->rank == 0) {
        pile_err why;
        if (listen_on(AF_INET6, port, &lfd, &dummy, &why) < 0 && listen_on(AF_INET, port, &lfd, &dummy, &why) < 0) {
            rc = pile_err_set(err, PILE_EIO, "cannot serve the rendezvous on port %d (MASTER_PORT + 1): %s", port,
                              why.msg);
            goto done;
        }
        if (listen_on(AF_INET6, 0, &ring_fd, &ring_port, err) < 0 &&
            (rc = listen_on(AF_INET, 0, &ring_fd, &ring_port, err)) < 0)
            goto done;
        if ((rc = serve_rendezvous(t, lfd, port, ring_port, deadline, table, err)) < 0) goto done;
    } else {
        if ((rc = reach_rank0(env->master_addr, port, deadline, t->timeout_s, &rdv_fd, err)) < 0) goto done;
        socklen_t len = sizeof rank0;
        getpeername(rdv_fd, (struct sockaddr *)&rank0, &len);
        struct sockaddr_storage mine;
        len = sizeof mine;
        getsockname(rdv_fd, (struct sockaddr *)&mine, &len);
        if ((rc = listen_on(mine.ss_family, 0, &ring_fd, &ring_port, err)) < 0) goto done;
        uint32_t hello[HELLO_N] = {MAGIC, VERSION, (uint32_t)t->rank, (uint32_t)t->world, (uint32_t)ring_port};
        uint32_t status = 0;
        char refusal[256];
        if (io_all(rdv_fd, hello, sizeof hello, 1, deadline) < 0 || io_all(rdv_fd, &status, sizeof status, 0, deadline) < 0) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot join rank 0 at '%s:%d'", env->master_addr, port);
            goto done;
        }
        if (status) {
            if (io_all(rdv_fd, refusal, sizeof refusal, 0, deadline) < 0) snprintf(refusal, sizeof refusal, "?");
            refusal[sizeof refusal - 1] = '\0';
            rc = pile_err_set(err, PILE_EIO, "cannot start the ranks: rank 0 says: %s", refusal);
            goto done;
        }
        if (io_all(rdv_fd, table, sizeof *table * (size_t)t->world, 0, deadline) < 0) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot join rank 0 at '%s:%d'", env->master_addr, port);
            goto done;
        }
    }
    if ((rc = join_ring(t, ring_fd, table, &rank0, deadline, err)) < 0) goto done;
    /* open returns once the whole ring stands */
    rc = tcp_barrier(t, err);
done:
    if (lfd >= 0) close(lfd);
    if (ring_fd >= 0) close(ring_fd);
    if (rdv_fd >= 0) close(rdv_fd);
    free(table);
    if (rc < 0) {
        tcp_close(t);
        return rc;
    }
    *impl = t;
    return 0;
}

static void tcp_close(void *impl)
{
    tcp_comm *t = impl;
    if (!t) return;
    if (t->prev_fd >= 0) close(t->prev_fd);
    if (t->next_fd >= 0) close(t->next_fd);
    free(t->off);
    free(t->len);
    free(t->scratch);
    free(t);
}

/* ------------------------------------------------------- transfers */

/* Marks t broken: its sockets closed (so that its neighbours learn at
 * once), the message kept for later calls. Returns PILE_EIO. */
static int fail(tcp_comm *t, pile_err *err, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(tcp_comm *t, pile_err *err, const char *what, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(t->broken_msg, sizeof t->broken_msg, "cannot %s (rank %d of %d): %s", what, t->rank, t->world, why);
    t->broken = 1;
    if (t->prev_fd >= 0) close(t->prev_fd);
    if (t->next_fd >= 0) close(t->next_fd);
    t->prev_fd = t->next_fd = -1;
    return pile_err_set(err, PILE_EIO, "%s", t->broken_msg);
}

/* Sends slen bytes to the next rank while receiving rlen from the
 * previous, until both are done; a neighbour that closes its end, or
 * neither moving for the timeout, fails the call. The next rank never
 * writes to this rank's connection to it, so that socket turning
 * readable means it was closed. A failure spreads round the ring through
 * the previous ranks' connections: each rank waiting for data hears that
 * its previous rank closed. */
static int xfer(tcp_comm *t, const char *what, const void *sbuf, size_t slen, void *rbuf, size_t rlen, pile_err *err)
{
    const unsigned char *s = sbuf;
    unsigned char *r = rbuf;
    const int next = (t->rank + 1) % t->world, prev = (t->rank + t->world - 1) % t->world;
    double idle_until = now_s() + t->timeout_s;
    while (slen || rlen) {
        /* the next rank's end is watched only while it is owed data: one
         * that has finished its part of the call may close and exit */
        struct pollfd p[2] = {{t->next_fd, (short)(slen ? POLLIN | POLLOUT : 0), 0},
                              {t->prev_fd, (short)(rlen ? POLLIN : 0), 0}};
        double left = idle_until - now_s();
        if (left <= 0)
            return fail(t, err, what,
                        rlen ? "rank %d (previous in the ring) sent nothing for %g s (--dist_timeout): it hangs or "
                               "died without closing its connection"
                             : "rank %d (next in the ring) took nothing for %g s (--dist_timeout): it hangs or died "
                               "without closing its connection",
                        rlen ? prev : next, t->timeout_s);
        int n = poll(p, 2, left > 60 ? 60000 : (int)(left * 1000) + 1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail(t, err, what, "poll failed: %s", strerror(errno));
        }
        if (slen && (p[0].revents & (POLLIN | POLLERR | POLLHUP)))
            return fail(t, err, what, "rank %d (next in the ring) closed its connection: it failed or exited", next);
        if (slen && (p[0].revents & POLLOUT)) {
            ssize_t k = send(t->next_fd, s, slen, MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return fail(t, err, what, "cannot send to rank %d (next in the ring): %s", next, strerror(errno));
            if (k > 0) {
                s += k;
                slen -= (size_t)k;
                idle_until = now_s() + t->timeout_s;
            }
        }
        if (rlen && (p[1].revents & (POLLIN | POLLERR | POLLHUP))) {
            ssize_t k = recv(t->prev_fd, r, rlen, 0);
            if (k == 0)
                return fail(t, err, what, "rank %d (previous in the ring) closed its connection: it failed or exited",
                            prev);
            if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return fail(t, err, what, "cannot receive from rank %d (previous in the ring): %s", prev,
                            strerror(errno));
            if (k > 0) {
                r += k;
                rlen -= (size_t)k;
                idle_until = now_s() + t->timeout_s;
            }
        }
    }
    return 0;
}

/* The header of every call, to the next rank, compared with the
 * previous rank's: all ranks make the same calls in the same order
 * (comm.h), and one that does not is told so here. */
enum { H_MAGIC, H_SEQ, H_KIND, H_COUNT_LO, H_COUNT_HI, H_ARG, H_N };

static const char *kind_name(uint32_t k)
{
    static const char *const names[] = {"allreduce", "reduce-scatter", "all-gather", "broadcast", "barrier"};
    return k < sizeof names / sizeof names[0] ? names[k] : "?";
}

static int begin(tcp_comm *t, const char *what, uint32_t kind, size_t count, uint32_t arg, pile_err *err)
{
    if (t->broken) return pile_err_set(err, PILE_EIO, "cannot %s: the communicator failed before: %s", what,
                                      t->broken_msg);
    if (t->world == 1) return 0;
    const uint32_t mine[H_N] = {MAGIC, (uint32_t)t->seq, kind, (uint32_t)count, (uint32_t)((uint64_t)count >> 32), arg};
    uint32_t theirs[H_N];
    t->seq++;
    PILE_FORWARD_IF_ERR(xfer(t, what, mine, sizeof mine, theirs, sizeof theirs, err));
    if (memcmp(mine, theirs, sizeof mine) != 0) {
        const int prev = (t->rank + t->world - 1) % t->world;
        return fail(t, err, what,
                    "rank %d (previous in the ring) made call %u, %s of %llu (%u), where this rank made call %u, "
                    "%s of %zu (%u): the ranks' calls differ",
                    prev, theirs[H_SEQ], kind_name(theirs[H_KIND]),
                    (unsigned long long)theirs[H_COUNT_LO] | (unsigned long long)theirs[H_COUNT_HI] << 32,
                    theirs[H_ARG], mine[H_SEQ], kind_name(kind), count, arg);
    }
    return 0;
}

/* ------------------------------------------------------- reductions */

typedef enum { EL_F32, EL_F64, EL_I64 } elem_kind;

/* acc[i] = acc[i] op mine[i] for floating-point T: the partial sum so
 * far, then this rank's. A NaN in either wins a max. */
#define REDUCE_FLOAT(T)                                                                    \
    do {                                                                                   \
        T *a = acc;                                                                        \
        const T *m = mine;                                                                 \
        if (op == PILE_COMM_SUM)                                                           \
            for (size_t i = 0; i < n; i++) a[i] += m[i];                                   \
        else                                                                               \
            for (size_t i = 0; i < n; i++) a[i] = isnan(m[i]) || m[i] > a[i] ? m[i] : a[i]; \
    } while (0)

static void reduce_into(void *acc, const void *mine, size_t n, elem_kind k, pile_comm_op op)
{
    if (k == EL_F32) {
        REDUCE_FLOAT(float);
    } else if (k == EL_F64) {
        REDUCE_FLOAT(double);
    } else {
        int64_t *a = acc;
        const int64_t *m = mine;
        if (op == PILE_COMM_SUM)
            for (size_t i = 0; i < n; i++) a[i] = (int64_t)((uint64_t)a[i] + (uint64_t)m[i]); /* wraps, as MPI's */
        else
            for (size_t i = 0; i < n; i++) a[i] = m[i] > a[i] ? m[i] : a[i];
    }
}

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Ring reduce-scatter of in's chunks (t->off, t->len, in elements of es
 * bytes) leaving the reduced chunk `rank` in out (which may be in's own
 * chunk: it is read only in the step that writes it). Piece by piece:
 * the whole ring runs over elements [s0, s0 + piece) of every chunk, then
 * the next piece, so that the scratch is two pieces. */
static int ring_reduce_scatter(tcp_comm *t, const char *what, const void *in, void *out, size_t es, elem_kind k,
                               pile_comm_op op, pile_err *err)
{
    const int w = t->world, r = t->rank;
    const unsigned char *src = in;
    const size_t piece = SEG / es;
    size_t longest = 0;
    for (int c = 0; c < w; c++) longest = t->len[c] > longest ? t->len[c] : longest;
    unsigned char *recv_buf = t->scratch, *send_buf = t->scratch + SEG;
    for (size_t s0 = 0; s0 < longest; s0 += piece) {
        for (int step = 0; step < w - 1; step++) {
            const int sc = ((r - step - 1) % w + w) % w, rc = ((r - step - 2) % w + w) % w;
            const size_t ns = t->len[sc] > s0 ? min_sz(piece, t->len[sc] - s0) : 0;
            const size_t nr = t->len[rc] > s0 ? min_sz(piece, t->len[rc] - s0) : 0;
            const void *sdata = step == 0 ? (const void *)(src + (t->off[sc] + s0) * es) : (const void *)send_buf;
            PILE_FORWARD_IF_ERR(xfer(t, what, sdata, ns * es, recv_buf, nr * es, err));
            reduce_into(recv_buf, src + (t->off[rc] + s0) * es, nr, k, op);
            if (step == w - 2) memcpy((unsigned char *)out + s0 * es, recv_buf, nr * es);
            unsigned char *swap = recv_buf;
            recv_buf = send_buf;
            send_buf = swap;
        }
    }
    return 0;
}

/* Ring all-gather: out's chunk `rank` is this rank's; afterwards every
 * chunk is its owner's. */
static int ring_all_gather(tcp_comm *t, const char *what, void *out, size_t es, pile_err *err)
{
    const int w = t->world, r = t->rank;
    unsigned char *o = out;
    for (int step = 0; step < w - 1; step++) {
        const int sc = ((r - step) % w + w) % w, rc = ((r - step - 1) % w + w) % w;
        PILE_FORWARD_IF_ERR(
            xfer(t, what, o + t->off[sc] * es, t->len[sc] * es, o + t->off[rc] * es, t->len[rc] * es, err));
    }
    return 0;
}

/* Chunks of n elements over the ranks as pile_comm_partition cuts them
 * (ceil(n / W) each, the last ones shorter or empty). */
static void partition(tcp_comm *t, size_t n)
{
    const size_t w = (size_t)t->world, chunk = n / w + (n % w != 0);
    for (size_t c = 0; c < w; c++) {
        t->off[c] = min_sz(c * chunk, n);
        t->len[c] = min_sz(n - t->off[c], chunk);
    }
}

static int allreduce_kind(tcp_comm *t, const char *what, uint32_t kind, void *buf, size_t n, size_t es, elem_kind k,
                          pile_comm_op op, uint32_t arg, pile_err *err)
{
    PILE_FORWARD_IF_ERR(begin(t, what, kind, n, arg, err));
    if (t->world == 1) return 0;
    partition(t, n);
    unsigned char *b = buf;
    PILE_FORWARD_IF_ERR(ring_reduce_scatter(t, what, b, b + t->off[t->rank] * es, es, k, op, err));
    return ring_all_gather(t, what, b, es, err);
}

static int tcp_allreduce(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                         pile_err *err)
{
    (void)dt, (void)stream;
    return allreduce_kind(impl, "allreduce", 0, buf, count, 4, EL_F32, op, (uint32_t)op, err);
}

static int tcp_allreduce_f64(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    return allreduce_kind(impl, "allreduce", 0, v, n, 8, EL_F64, op, 16u | (uint32_t)op, err);
}

static int tcp_allreduce_i64(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    return allreduce_kind(impl, "allreduce", 0, v, n, 8, EL_I64, op, 32u | (uint32_t)op, err);
}

static int tcp_reduce_scatter(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt,
                              pile_comm_op op, void *stream, pile_err *err)
{
    (void)dt, (void)stream;
    tcp_comm *t = impl;
    static const char what[] = "reduce-scatter";
    PILE_FORWARD_IF_ERR(begin(t, what, 1, count, (uint32_t)op, err));
    const size_t share = count / (size_t)t->world;
    for (int c = 0; c < t->world; c++) {
        t->off[c] = (size_t)c * share;
        t->len[c] = share;
    }
    if (t->world == 1) {
        if (out != in) memcpy(out, in, count * 4);
        return 0;
    }
    return ring_reduce_scatter(t, what, in, out, 4, EL_F32, op, err);
}

static int tcp_all_gather(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                          pile_err *err)
{
    (void)stream;
    tcp_comm *t = impl;
    static const char what[] = "all-gather";
    const size_t es = pile_comm_dtype_size(dt), share = count / (size_t)t->world;
    PILE_FORWARD_IF_ERR(begin(t, what, 2, count, (uint32_t)es, err));
    for (int c = 0; c < t->world; c++) {
        t->off[c] = (size_t)c * share;
        t->len[c] = share;
    }
    unsigned char *mine = (unsigned char *)out + t->off[t->rank] * es;
    if (mine != in) memcpy(mine, in, share * es);
    return ring_all_gather(t, what, out, es, err);
}

/* A chain from the root round the ring, piece by piece: each rank but the
 * root receives a piece and, unless it is the last (root - 1), passes it
 * on while the next piece arrives. */
static int tcp_broadcast_bytes(void *impl, void *buf, size_t bytes, int root, pile_err *err)
{
    tcp_comm *t = impl;
    static const char what[] = "broadcast";
    PILE_FORWARD_IF_ERR(begin(t, what, 3, bytes, (uint32_t)root, err));
    if (t->world == 1) return 0;
    const int last = (root + t->world - 1) % t->world;
    unsigned char *b = buf;
    for (size_t at = 0; at < bytes; at += SEG) {
        const size_t n = min_sz(SEG, bytes - at);
        if (t->rank != root) PILE_FORWARD_IF_ERR(xfer(t, what, NULL, 0, b + at, n, err));
        if (t->rank != last) PILE_FORWARD_IF_ERR(xfer(t, what, b + at, n, NULL, 0, err));
    }
    return 0;
}

static int tcp_broadcast(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                         pile_err *err)
{
    (void)stream;
    return tcp_broadcast_bytes(impl, buf, count * pile_comm_dtype_size(dt), root, err);
}

/* An allreduce of one value per rank: every step of its ring carries
 * data, so no rank leaves before every rank has come. */
static int tcp_barrier(void *impl, pile_err *err)
{
    tcp_comm *t = impl;
    int64_t stack[64], *v = t->world <= 64 ? stack : calloc((size_t)t->world, sizeof *v);
    if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    memset(v, 0, sizeof *v * (size_t)t->world);
    v[t->rank] = 1;
    int rc = allreduce_kind(t, "wait at a barrier", 4, v, (size_t)t->world, 8, EL_I64, PILE_COMM_SUM, 64u, err);
    if (v != stack) free(v);
    return rc;
}

const pile__comm_ops pile__comm_tcp_ops = {
    .name = "tcp",
    .open = tcp_open,
    .close = tcp_close,
    .allreduce = tcp_allreduce,
    .reduce_scatter = tcp_reduce_scatter,
    .all_gather = tcp_all_gather,
    .broadcast = tcp_broadcast,
    .allreduce_f64 = tcp_allreduce_f64,
    .allreduce_i64 = tcp_allreduce_i64,
    .broadcast_bytes = tcp_broadcast_bytes,
    .barrier = tcp_barrier,
};
