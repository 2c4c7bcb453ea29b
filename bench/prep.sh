#!/bin/sh
# pile-prep throughput and memory: MB/s of JSONL, tokens/s, peak RSS and the
# stage breakdown (read / parse / tokenize / pack / write, thread-seconds),
# at --threads 1 and 2, byte tokenizer and GPT-2, on the shared corpus and
# on a larger one made by make-corpus.sh, each run REPEATS times with the
# thread counts interleaved (so that a loaded machine slows both alike: the
# 2-thread speedup is the median of the per-repeat ratios). Then each
# stage's single-thread throughput from the GPT-2 1-thread runs on the large
# corpus (decompress from `zstd -dc` alone, split lines = read - decompress)
# and the ceiling those rates imply for 8, 32 and 128 cores. Prints Markdown
# for bench/RESULTS.md. Release build.
#
#   bench/prep.sh [BUILD_DIR]      (default: build-bench-prep beside the sources)
# Env: PILE_SHARED (default ../shared), PILE_BENCH_CORPUS (default
# /var/tmp/pile-corpus-300, built with make-corpus.sh --size-mb 300 if absent;
# it needs train/ and val.jsonl.zst), PILE_BENCH_THREADS (default "1 2"),
# PILE_BENCH_REPEATS (default 3), PILE_BENCH_FILES (input files of the
# ceiling's job, default 30: the Pile's train files), PILE_BENCH_TMP (output
# folder, default under /var/tmp), PILE_BENCH_OLD_PREP (another pile-prep
# binary, say main's: run beside this one in every repeat, its rows marked
# "old"), PILE_BENCH_TOKS (default "bytes gpt2"), PILE_BENCH_SMALL=0: leave
# out the shared corpus (a quicker A/B of the large one), PILE_BENCH_PERF=1: also profile one GPT-2
# run at --threads 1 on the large corpus with `perf record --call-graph dwarf`
# and print each stage's share of the CPU samples (a sample counts as
# tokenizer when any frame of its stack is a tokenizer function).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-prep}
SHARED=${PILE_SHARED:-$ROOT/../shared}
BIG=${PILE_BENCH_CORPUS:-/var/tmp/pile-corpus-300}
THREADS=${PILE_BENCH_THREADS:-1 2}
REPEATS=${PILE_BENCH_REPEATS:-3}
FILES=${PILE_BENCH_FILES:-30}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep >&2
PREP=$BUILD/preprocess/pile-prep
if [ ! -d "$BIG/train" ]; then
    echo "building $BIG (about 2 minutes)..." >&2
    "$SHARED/tools/make-corpus.sh" --size-mb 300 --out "$BIG" >&2
fi
[ -x /usr/bin/time ] || { echo "bench/prep.sh: needs /usr/bin/time (GNU time) for the peak RSS" >&2; exit 1; }
command -v zstd >/dev/null || { echo "bench/prep.sh: needs the zstd command (decompression alone)" >&2; exit 1; }

TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-prep-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
bt=$(grep -o '"name": "buildtype", "value": "[a-z]*"' "$BUILD/meson-info/intro-buildoptions.json" | sed 's/.*"value": "//; s/"$//')
echo "pile-prep $("$PREP" --version | cut -d' ' -f2), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $bt build; $REPEATS repeats, thread counts interleaved"

# run CORPUS TOKNAME J REP [BINARY]: one run, one line of runs.tsv:
# corpus tok j rep jsonl_mb wall mbs mtoks rss read parse tokenize pack write readers busiest share
#   read_cpu parse_cpu tokenize_cpu pack_cpu write_cpu bg_write_cpu (the writer's background thread; empty
#   for a pile-prep that does not report it) copy_cpu (the workers' copies of the ids into the rows; empty
#   for a pile-prep whose packing thread copies them, counted in pack and write)
run() {
    r_corpus=$1 r_tok=$2 r_j=$3 r_rep=$4 r_bin=${5:-$PREP}
    r_spec=bytes
    case $r_tok in gpt2*) r_spec=$SHARED/fixtures/gpt2 ;; esac
    rm -rf "$TMP/out"
    /usr/bin/time -v "$r_bin" --force -o "$TMP/out" -j "$r_j" -t "$r_spec" "$r_corpus/train" "$r_corpus/val.jsonl.zst" \
        >/dev/null 2>"$TMP/err" || { sed 's/^/# /' "$TMP/err" >&2; exit 1; }
    # the summary lines: "...; wall time W s; R MB/s of JSONL (D MB/s on disk); T M tokens/s",
    # "stage time (thread-seconds): read a, parse b, tokenize c, pack+write d (of which write e) (...)",
    # "busiest stage: NAME, P% of the wall time (...)" and "... (N inputs read at once at most; ..."
    awk -v name="$(basename "$r_corpus")" -v tok="$r_tok" -v j="$r_j" -v rep="$r_rep" '
        /^shards .*wall time/ {
            for (i = 1; i <= NF; i++) {
                if ($i == "time") wall = $(i + 1)
                if ($i == "of" && $(i + 1) == "JSONL") mbs = $(i - 2)
                if ($i ~ /M$/ && $(i + 1) == "tokens/s") tps = substr($i, 1, length($i) - 1)
            }
        }
        /^stage time/ {
            gsub(/[,()%]/, "")
            for (i = 1; i <= NF; i++) {
                if ($i == "read") rd = $(i + 1)
                if ($i == "parse") ps = $(i + 1)
                if ($i == "tokenize" && tk == "") tk = $(i + 1)
                if ($i == "pack+write") pw = $(i + 1)
                if ($i == "write") wr = $(i + 1)
            }
        }
        /^stage CPU/ {
            gsub(/[,()%]/, "")
            for (i = 1; i <= NF; i++) {
                if ($i == "read") rc = $(i + 1)
                if ($i == "parse") pc = $(i + 1)
                if ($i == "tokenize" && tc == "") tc = $(i + 1)
                if ($i == "pack") kc = $(i + 1)
                if ($i == "write") wc = $(i + 1)
                if ($i == "background-write") bw = $(i + 1)
                if ($i == "copy") cc = $(i + 1)
            }
        }
        /^busiest stage:/ { bn = $3; sub(/,$/, "", bn); bs = $4 }
        /inputs? read at once at most/ { for (i = 1; i <= NF; i++) if ($i ~ /^\(?[0-9]+$/ && $(i + 1) ~ /^inputs?$/) { nr = $i; gsub(/\(/, "", nr) } }
        /Maximum resident set size/ { rss = $NF / 1024 }
        END {
            printf "%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
                   name, tok, j, rep, wall * mbs, wall, mbs, tps, rss, rd, ps, tk, pw - wr, wr, nr, bn, bs, rc, pc, tc, kc, wc, bw, cc
        }' "$TMP/err" >>"$TMP/runs.tsv"
}

: >"$TMP/runs.tsv"
: >"$TMP/dec"
CORPORA="$SHARED/corpus $BIG"
[ "${PILE_BENCH_SMALL:-1}" != 0 ] || CORPORA=$BIG
for corpus in $CORPORA; do
    for tok in ${PILE_BENCH_TOKS:-bytes gpt2}; do
        rep=1
        while [ $rep -le "$REPEATS" ]; do
            if [ "$corpus" = "$BIG" ] && [ $tok = gpt2 ]; then
                # decompression alone (its CPU seconds), between the runs it is compared with
                /usr/bin/time -f "%U %S" -o "$TMP/dtime" zstd -dcq "$BIG"/train/* "$BIG/val.jsonl.zst" >/dev/null
                awk '{ print $1 + $2 }' "$TMP/dtime" >>"$TMP/dec"
            fi
            for j in $THREADS; do
                run "$corpus" $tok "$j" $rep
                [ -z "${PILE_BENCH_OLD_PREP:-}" ] || run "$corpus" "$tok-old" "$j" $rep "$PILE_BENCH_OLD_PREP"
            done
            rep=$((rep + 1))
        done
    done
done

echo
echo "Each row: the fastest of the repeats (wall time); stage columns are that run's thread-seconds."
echo
echo "| corpus | JSONL MB | tokenizer | threads | wall s | JSONL MB/s | Mtok/s | peak RSS MiB | read | parse | tokenize | pack | write | (all but tokenize)/tokenize | same in CPU time | readers | busiest stage |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
sort -t"$(printf '\t')" -k1,1 -k2,2 -k3,3n -k6,6g "$TMP/runs.tsv" | awk -F'\t' '
    { key = $1 FS $2 FS $3; if (key in seen) next; seen[key] = 1
      share = $12 > 0 ? ($10 + $11 + $13 + $14) / $12 * 100 : 0
      cpu = $20 > 0 ? sprintf("%.1f%%", ($18 + $19 + $21 + $22 + $23 + $24) / $20 * 100) : ""
      printf "| %s | %.0f | %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %.2f | %s | %.1f%% | %s | %s | %s %s |\n",
             $1, $5, $2, $3, $6, $7, $8, $9, $10, $11, $12, $13, $14, share, cpu, $15, $16, $17 }'

echo
echo "2 threads against 1, per repeat (wall-time ratio of the two interleaved runs), and the median:"
echo
echo "| corpus | tokenizer | ratios | median |"
echo "|---|---|---|---|"
awk -F'\t' '$3 == 1 { one[$1 FS $2 FS $4] = $6 } $3 == 2 { two[$1 FS $2 FS $4] = $6 }
    END { for (k in one) if (k in two) { split(k, f, FS); r = one[k] / two[k]; key = f[1] FS f[2]
              list[key] = list[key] (list[key] == "" ? "" : " ") sprintf("%.2f", r); n[key]++; v[key, n[key]] = r }
          for (key in list) { m = n[key]
              for (i = 1; i <= m; i++) for (k2 = i + 1; k2 <= m; k2++) if (v[key, k2] < v[key, i]) { t = v[key, i]; v[key, i] = v[key, k2]; v[key, k2] = t }
              med = m % 2 ? v[key, (m + 1) / 2] : (v[key, m / 2] + v[key, m / 2 + 1]) / 2
              split(key, f, FS); printf "| %s | %s | %s | %.2fx |\n", f[1], f[2], list[key], med } }' "$TMP/runs.tsv" | sort

if [ -n "${PILE_BENCH_OLD_PREP:-}" ]; then
    echo
    echo "This build against the old one, per repeat (old wall time / new, interleaved runs), and the median:"
    echo
    echo "| corpus | tokenizer | threads | ratios | median |"
    echo "|---|---|---|---|---|"
    awk -F'\t' '$2 ~ /-old$/ { t = $2; sub(/-old$/, "", t); old[$1 FS t FS $3 FS $4] = $6; next } { new[$1 FS $2 FS $3 FS $4] = $6 }
        END { for (k in old) if (k in new) { split(k, f, FS); r = old[k] / new[k]; key = f[1] FS f[2] FS f[3]
                  list[key] = list[key] (list[key] == "" ? "" : " ") sprintf("%.2f", r); n[key]++; v[key, n[key]] = r }
              for (key in list) { m = n[key]
                  for (i = 1; i <= m; i++) for (k2 = i + 1; k2 <= m; k2++) if (v[key, k2] < v[key, i]) { t = v[key, i]; v[key, i] = v[key, k2]; v[key, k2] = t }
                  med = m % 2 ? v[key, (m + 1) / 2] : (v[key, m / 2] + v[key, m / 2 + 1]) / 2
                  split(key, f, FS); printf "| %s | %s | %s | %s | %.2fx |\n", f[1], f[2], f[3], list[key], med } }' "$TMP/runs.tsv" | sort
fi

if [ -n "${PILE_BENCH_OLD_PREP:-}" ]; then
    echo
    echo "CPU seconds per stage at --threads 1, the median over the repeats (CPU time, which a loaded machine inflates"
    echo "less than wall time), this build and the old one; 'other' is everything but tokenize (read, parse, pack,"
    echo "write, copy, background-write), also as a share of tokenize:"
    echo
    echo "| corpus | tokenizer | build | read | parse | tokenize | pack+write | copy | background-write | other | other/tokenize |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' '$3 == 1 { t = $2; b = "this"; if (t ~ /-old$/) { sub(/-old$/, "", t); b = "old" }
            k = $1 FS t FS b; n[k]++
            v[k, 1, n[k]] = $18; v[k, 2, n[k]] = $19; v[k, 3, n[k]] = $20; v[k, 4, n[k]] = $21 + $22
            v[k, 5, n[k]] = $24 + 0; v[k, 6, n[k]] = $23 + 0; v[k, 7, n[k]] = $18 + $19 + $21 + $22 + $23 + $24 }
        function med(k, c,   m, i, j, t, a) { m = n[k]; for (i = 1; i <= m; i++) a[i] = v[k, c, i] + 0
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
        END { for (k in n) { split(k, f, FS); o = med(k, 7); tk = med(k, 3)
                  printf "| %s | %s | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.1f%% |\n", f[1], f[2], f[3],
                         med(k, 1), med(k, 2), tk, med(k, 4), med(k, 5), med(k, 6), o, (tk > 0 ? 100 * o / tk : 0) } }' \
        "$TMP/runs.tsv" | sort
fi

# --- start-up: a one-document input with GPT-2 (opening the tokenizer, copying it into OUT, the lock, the
# manifest): serial time that every run pays, so a short job's 2-thread ratio with it
printf '{"text": "hello world", "meta": {"pile_set_name": "x"}}\n' >"$TMP/one.jsonl"
: >"$TMP/startup"
rep=1
while [ $rep -le "$REPEATS" ]; do
    for b in "$PREP" ${PILE_BENCH_OLD_PREP:+"$PILE_BENCH_OLD_PREP"}; do
        rm -rf "$TMP/out"
        name=this; [ "$b" = "$PREP" ] || name=old
        /usr/bin/time -f "$name %e %U %S" -o "$TMP/stime" "$b" --force -o "$TMP/out" -j 1 -t "$SHARED/fixtures/gpt2" \
            "$TMP/one.jsonl" >/dev/null 2>&1
        cat "$TMP/stime" >>"$TMP/startup"
    done
    rep=$((rep + 1))
done
echo
echo "Start-up: one document, GPT-2, --threads 1 (wall and CPU seconds, median of $REPEATS):"
echo
echo "| build | wall s | CPU s (user + sys) |"
echo "|---|---|---|"
awk '{ n[$1]++; w[$1, n[$1]] = $2; c[$1, n[$1]] = $3 + $4 }
    function med(a, m,   k, i, j, t, x) { k = n[m]; for (i = 1; i <= k; i++) x[i] = a[m, i]
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
        return k % 2 ? x[(k + 1) / 2] : (x[k / 2] + x[k / 2 + 1]) / 2 }
    END { for (m in n) printf "| %s | %.2f | %.2f |\n", m, med(w, m), med(c, m) }' "$TMP/startup" | sort -r

# --- each stage alone, one thread: GPT-2 on the large corpus
dec=$(sort -g "$TMP/dec" | head -1)
echo
echo "Stages alone, one thread, GPT-2 on $(basename "$BIG"): CPU seconds of each stage's threads (each the least over"
echo "the -j 1 runs; CPU time, which a loaded machine does not inflate as it does wall time; decompress: \`zstd -dc\`"
echo "of the same files, $(printf '%.2f' "$dec") s at best; split lines = read - decompress: the line reader (cutting the"
echo "decoded blocks into lines; in a pile-prep before its block reader, also copying each line into a chunk) and"
echo "decoding beside the workers rather than alone; pack + write: the packing thread (placing rows, reserving and"
echo "committing them in the writer, finishing shards); copy: the workers' copies of the ids into the rows (a pile-prep"
echo "without it copies on the packing thread); background-write: the shard writer's own thread (the data and row checksums, the disk writes)), and the"
echo "ceilings they imply: one reader per input file read at once (1 + cores/4 of them, at most the job's files), one"
echo "packing thread, one background writer, and all stages sharing the cores (with PILE_BENCH_OLD_PREP, the old"
echo "binary's table follows):"
for stage_tok in gpt2 ${PILE_BENCH_OLD_PREP:+gpt2-old}; do
[ $stage_tok = gpt2 ] || { echo; echo "The same for the old binary (PILE_BENCH_OLD_PREP), from its runs beside this one's:"; }
echo
awk -F'\t' -v dec="$dec" -v files="$FILES" -v big="$(basename "$BIG")" -v tok="$stage_tok" '
    $1 == big && $2 == tok && $3 == 1 {
        if (mb == "" || $5 > mb) mb = $5
        if (rd == "" || $18 < rd) rd = $18; if (ps == "" || $19 < ps) ps = $19; if (tk == "" || $20 < tk) tk = $20
        if (pk == "" || $21 < pk) pk = $21; if (wr == "" || $22 < wr) wr = $22
        if ($23 != "" && (bw == "" || $23 < bw)) bw = $23
        if ($24 != "" && (cc == "" || $24 < cc)) cc = $24
    }
    END {
        sp = rd - dec; if (sp < 0.001) sp = 0.001
        n = split("decompress split-lines parse tokenize pack write copy background-write", name, " ")
        t[1] = dec + 0; t[2] = sp + 0; t[3] = ps + 0; t[4] = tk + 0; t[5] = pk + 0; t[6] = wr + 0; t[7] = cc + 0
        t[8] = bw + 0  # numbers, not the fields'"'"' strings: the clamp below compares them
        for (i = 1; i <= n; i++) if (t[i] < 0.001) t[i] = 0.001  # below the clock: at most a millisecond
        pk = t[5]; wr = t[6]; cc = t[7]; bw = t[8]
        printf "| stage | CPU seconds | MB/s of JSONL on one thread | share of tokenize |\n|---|---|---|---|\n"
        other = 0
        for (i = 1; i <= n; i++) {
            printf "| %s | %.3f | %.0f | %.1f%% |\n", name[i], t[i], mb / t[i], 100 * t[i] / tk
            if (i != 4) other += t[i]
        }
        printf "| everything but tokenize | %.3f | | %.1f%% |\n", other, 100 * other / tk
        cpu = dec + sp + ps + tk + pk + wr + cc + bw
        printf "\nTokenizing on 64 cores: %.0f MB/s of JSONL. One packing thread (pack + write): %.0f MB/s; the copies on one worker: %.0f MB/s; the writer'"'"'s background thread: %.0f MB/s; one reader (decompress + split): %.0f MB/s.\n\n", 64 * mb / tk, mb / (pk + wr), mb / cc, mb / bw, mb / (dec + sp)
        printf "| cores | all stages on the cores | readers (files: %d) | the packing thread | the background writer | ceiling | limited by |\n|---|---|---|---|---|---|---|\n", files
        split("8 32 128", cores, " ")
        for (c = 1; c <= 3; c++) {
            N = cores[c]; nr = 1 + int(N / 4); if (nr > files) nr = files
            a = N * mb / cpu; r = nr * mb / (dec + sp); p = mb / (pk + wr); b = mb / bw
            lim = a; why = "cores (tokenizing)"; if (r < lim) { lim = r; why = "readers" } if (p < lim) { lim = p; why = "packing thread" }
            if (b < lim) { lim = b; why = "background writer" }
            printf "| %d | %.0f MB/s | %.0f MB/s (%d) | %.0f MB/s | %.0f MB/s | %.0f MB/s | %s |\n", N, a, r, nr, p, b, lim, why
        }
        # 2 workers against 1 on a 2-core machine: at -j 1 the other
        # threads have the second core to themselves, at -j 2 they share
        # both cores with the workers
        w = ps + tk + cc; o = dec + sp + pk + wr + bw
        printf "\nOn 2 cores, 2 threads against 1: the workers parse, tokenize and copy (W = %.3f s); the other threads (R = %.3f s) have the second core to themselves at -j 1 and share both at -j 2, so the ratio is at most 2W / (W + R) = %.2fx, and %.2fx were every stage but decompression free. The single-threaded start-up lowers a measured ratio below these.\n", w, o, 2 * w / (w + o), 2 * w / (w + dec)
    }' "$TMP/runs.tsv"
done

[ "${PILE_BENCH_PERF:-0}" = 1 ] || exit 0
command -v perf >/dev/null || { echo "bench/prep.sh: PILE_BENCH_PERF=1 needs perf" >&2; exit 1; }
rm -rf "$TMP/out"
perf record -q -F 400 --call-graph dwarf,16384 -o "$TMP/perf.data" "$PREP" --force -o "$TMP/out" -j 1 \
    -t "$SHARED/fixtures/gpt2" "$BIG/train" "$BIG/val.jsonl.zst" >/dev/null 2>&1
nm --defined-only "$BUILD/tokenizer/libpile_tokenizer.a" 2>/dev/null | awk 'NF == 3 && ($2 == "t" || $2 == "T") {print $3}' \
    >"$TMP/toksyms"
echo
echo "CPU samples, GPT-2, --threads 1, $(basename "$BIG") (perf, dwarf stacks):"
echo
perf script -i "$TMP/perf.data" -F tid,ip,sym,dso 2>/dev/null | python3 -c '
import collections, re, sys
tok = set(open(sys.argv[1]).read().split()) | {"pile_encoder_encode"}
STAGES = [  # first match over the whole stack wins
    ("tokenizer", lambda s, d: s in tok or "utf8proc" in d or "pcre2" in d),
    ("JSON parse (simdjson)", lambda s, d: "simdjson" in d or s.startswith("pile_jsonl_parse")),
    ("zstd decompression", lambda s, d: "libzstd" in d),
    ("shard writer", lambda s, d: s.startswith(("pile_shard_writer", "writer_")) or "xxhash" in d),
    ("packer", lambda s, d: s.startswith(("pile__prep_packer", "concat_doc", "emit_row", "close_window", "pack_chunk"))),
    ("line reader + chunks", lambda s, d: s.startswith(("pile_lines", "reader_main", "read_input", "chunk_add_line"))),
]
cnt = collections.Counter()
frames = []
def flush():
    if not frames: return
    for name, hit in STAGES:
        if any(hit(s, d) for s, d in frames):
            cnt[name] += 1
            break
    else:
        cnt["other" + (" (kernel)" if "kernel" in frames[0][1] else "")] += 1
    frames.clear()
for line in sys.stdin:
    m = re.match(r"\s+[0-9a-f]+\s+(.*?)(\+0x[0-9a-f]+)?\s+\((.*)\)$", line)
    if m: frames.append((m.group(1), m.group(3)))
    else: flush()
flush()
tot = sum(cnt.values()) or 1
t = cnt["tokenizer"] or 1
print("| stage | share of samples | share of the tokenizer |\n|---|---|---|")
for k, v in cnt.most_common():
    print(f"| {k} | {100 * v / tot:.1f}% | {100 * v / t:.1f}% |")
rest = tot - cnt["tokenizer"]
print(f"| everything but the tokenizer | {100 * rest / tot:.1f}% | {100 * rest / t:.1f}% |")
' "$TMP/toksyms"
