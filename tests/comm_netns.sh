#!/bin/sh
# Two "nodes" on one machine: two network namespaces joined by a veth
# pair (10.77.0.1 and 10.77.0.2), two ranks in each. The "tcp"
# communicator across them, started the way torchrun starts one node's
# ranks (RANK, LOCAL_RANK, MASTER_ADDR = the first node's address): every
# collective against the one-process result, and a rank killed
# mid-collective failing every other rank on both nodes. Then one mpirun
# across the two, through an rsh agent that runs its daemon in the other
# namespace (where this build has MPI).
#   comm_netns.sh TEST_COMM_RANKS HAVE_MPI(1|0)
# Speaks TAP; exits 77 when network namespaces cannot be made here (not
# root, no `ip`, a container without CAP_SYS_ADMIN), and says why.
set -u
. "$(dirname "$0")/tap.sh"
RANKS=$1
HAVE_MPI=$2
DEADLINE=120
skip() { echo "1..0 # SKIP $1"; exit 77; }
command -v ip >/dev/null || skip "no 'ip' command (iproute2) to make network namespaces"
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
NS=pile-comm-$$
A=$NS-a
B=$NS-b
ip netns add $A 2>/dev/null || skip "cannot make a network namespace here (ip netns add: not permitted)"
tap_tmpdir comm-netns
trap 'ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; rm -rf "$TMP"' EXIT
ip netns add $B &&
    ip link add veth-$$-a netns $A type veth peer name veth-$$-b netns $B &&
    ip -n $A addr add 10.77.0.1/24 dev veth-$$-a && ip -n $B addr add 10.77.0.2/24 dev veth-$$-b &&
    ip -n $A link set veth-$$-a up && ip -n $B link set veth-$$-b up &&
    ip -n $A link set lo up && ip -n $B link set lo up ||
    skip "cannot join two network namespaces with a veth pair here"
PORT=29500

# node NS NODE ARGS...: starts ranks 2 * NODE and 2 * NODE + 1 in NS, in the
# background, their stdout and stderr to $TMP/out and $TMP/err
pids=""
node() {
    ns=$1 node_rank=$2
    shift 2
    for l in 0 1; do
        ip netns exec $ns env RANK=$((2 * node_rank + l)) WORLD_SIZE=4 LOCAL_RANK=$l LOCAL_WORLD_SIZE=2 \
            MASTER_ADDR=10.77.0.1 MASTER_PORT=$PORT timeout $DEADLINE "$RANKS" "$@" >> "$TMP/out" 2>> "$TMP/err" &
        pids="$pids $!"
    done
}
# wait_all: st = the number of ranks that exited non-zero
wait_all() {
    st=0
    for p in $pids; do wait $p || st=$((st + 1)); done
    pids=""
}

: > "$TMP/out"; : > "$TMP/err"
node $A 0 check tcp
node $B 1 check tcp
wait_all
if [ $st -eq 0 ] && [ "$(grep -c ': ok (tcp, 4 ranks)' "$TMP/out")" -eq 4 ]; then
    ok "tcp across two namespaces, 2 ranks each: every collective equals the one-process result"
else
    fail "tcp across two namespaces ($st ranks failed)"
fi

# rank 2 (the second node's first) kills itself mid-allreduce
: > "$TMP/out"; : > "$TMP/err"
PORT=29600
start=$(date +%s)
node $A 0 die 2 3 --timeout 60
node $B 1 die 2 3 --timeout 60
wait_all
took=$(( $(date +%s) - start ))
missing=""
for r in 0 1 3; do grep -Eq "^rank $r: cannot allreduce .*rank [0-9]" "$TMP/err" || missing="$missing $r"; done
if [ $st -eq 4 ] && [ -z "$missing" ] && [ $took -lt 60 ]; then
    ok "tcp across two namespaces, rank 2 killed mid-allreduce: ranks 0, 1 and 3 fail naming the call and a peer in ${took}s"
else
    fail "tcp across two namespaces, rank 2 killed ($st ranks failed, ${took}s, no message from:$missing)"
fi

# one mpirun across both: its daemon reaches the second namespace through an
# "rsh agent" that is `ip netns exec` (no ssh), hosts named by address
if [ "$HAVE_MPI" = 1 ] && command -v mpirun >/dev/null; then
    cat > "$TMP/agent" <<AGENT
#!/bin/sh
# mpirun's rsh agent: HOST COMMAND... -> COMMAND run in HOST's namespace
host=\$1; shift
case \$host in 10.77.0.1) ns=$A ;; 10.77.0.2) ns=$B ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec \$ns sh -c "\$*"
AGENT
    chmod +x "$TMP/agent"
    printf '10.77.0.1 slots=2\n10.77.0.2 slots=2\n' > "$TMP/hosts"
    MPIRUN="mpirun --allow-run-as-root --oversubscribe --hostfile $TMP/hosts --mca plm_rsh_agent $TMP/agent
        --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24"
    # (under ASan: Open MPI's own leaks at exit, as in comm_ranks.sh)
    [ -n "${ASAN_OPTIONS:-}" ] && MPIRUN="$MPIRUN -x ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0"
    run ip netns exec $A timeout $DEADLINE $MPIRUN -np 4 "$RANKS" check mpi
    if [ $st -eq 0 ] && [ "$(grep -c ': ok (mpi, 4 ranks)' "$TMP/out")" -eq 4 ]; then
        ok "one mpirun across two namespaces, 2 ranks each: every collective equals the one-process result"
    else
        fail "one mpirun across two namespaces (status $st)"
    fi
    run ip netns exec $A timeout $DEADLINE $MPIRUN -np 4 "$RANKS" die 2 3
    if [ $st -ne 0 ] && [ $st -ne 124 ]; then
        ok "one mpirun across two namespaces, rank 2 killed mid-allreduce: the job fails (status $st)"
    else
        fail "one mpirun across two namespaces, rank 2 killed (status $st)"
    fi
else
    echo "# skipped mpirun across the namespaces: no mpirun, or this build has no MPI"
fi
tap_done
