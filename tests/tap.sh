# TAP helpers shared by the shell tests, sourced as `. "$(dirname "$0")/tap.sh"`
# (meson passes each script by absolute path, so dirname finds this file).
# POSIX sh; the caller's `set -u` applies. End a script with `tap_done`.
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
# not_ok NAME [LINE...]: each LINE becomes a TAP comment
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
check() { # check NAME CMD...
    name=$1; shift
    if "$@"; then ok "$name"; else not_ok "$name" "failed: $*"; fi
}
# fail NAME: not ok, followed by what the last `run` printed
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$TMP/out" "$TMP/err" 2>/dev/null | head -20; }
# abs PATH: PATH made absolute against the current folder (a script cds into its TMP)
abs() { case $1 in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }
# run CMD...: stdout to $TMP/out, stderr to $TMP/err, status to $st
run() { "$@" > "$TMP/out" 2> "$TMP/err"; st=$?; }
# expect NAME STATUS PATTERN (grep -E over stdout+stderr)
expect() {
    if [ "$st" -eq "$2" ] && cat "$TMP/out" "$TMP/err" | grep -Eq -- "$3"; then ok "$1"; else fail "$1 (status $st)"; fi
}
# tap_skip_unless WHY FILE...: skip the whole script (exit 77) unless every FILE exists
tap_skip_unless() {
    why=$1; shift
    for f in "$@"; do
        if [ ! -f "$f" ]; then
            echo "1..0 # SKIP $why"
            exit 77
        fi
    done
}
# tap_skip_unless_numpy PYTHON: skip the whole script (exit 77) unless PYTHON
# imports numpy (tests/dp_compare.py reads the weights with it)
tap_skip_unless_numpy() {
    if ! "$1" -c 'import numpy' > /dev/null 2>&1; then
        echo "1..0 # SKIP numpy cannot be imported (tests/dp_compare.py reads the weights with it)"
        exit 77
    fi
}
# tap_tmpdir NAME: TMP becomes a fresh $TMPDIR/pile-NAME-XXXXXX, removed on exit
tap_tmpdir() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/pile-$1-XXXXXX") || exit 1
    trap 'rm -rf "$TMP"' EXIT
}
# train/loss of each step of a run's metrics.jsonl, as written: "STEP VALUE" lines
losses() {
    awk '/"train\/loss"/ {
        if (!match($0, /"step": *[0-9]+/)) next
        s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s)
        if (!match($0, /"train\/loss": *[^,}]+/)) next
        v = substr($0, RSTART, RLENGTH); sub(/.*: */, "", v)
        print s, v }' "$1" | sort -n
}
# signal_rank PARENT VAR=VALUE SIGNAL: SIGNAL to each child of the launcher
# PARENT whose environment holds VAR=VALUE (the rank a test stops)
signal_rank() {
    for p in $(ps -o pid= --ppid "$1"); do
        if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "$2"; then kill -"$3" "$p"; fi
    done
}
# plain_only COUNT WHAT: in a plain build, true (run it); in a sanitized
# one (meson sets PILE_TEST_SANITIZED=1 there), COUNT skipped checks named
# WHAT, and false. The slowest scripts keep CI within its time this way:
# under ASan they run a subset of their training runs that still takes
# every code path, and the plain build runs them all.
plain_only() {
    [ "${PILE_TEST_SANITIZED:-0}" = 1 ] || return 0
    k=$1
    while [ "$k" -gt 0 ]; do
        n=$((n + 1))
        echo "ok $n - $2 # SKIP the sanitized build runs a subset; the plain build runs this"
        k=$((k - 1))
    done
    return 1
}
tap_done() {
    echo "1..$n"
    [ $failed -eq 0 ]
}
