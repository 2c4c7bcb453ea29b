#!/usr/bin/env bash
# make-sample.sh: rebuild data/sample/, the small real corpus in The Pile's
# layout that tools/demo.sh falls back on (see data/sample/README.md).
#
#   tools/make-sample.sh [--out DIR] [--work DIR]
#
#   --out DIR   where to write (default: data/sample in this repository)
#   --work DIR  downloads and unpacked packages, kept for reruns
#               (default: /var/tmp/pile-sample-work)
#
# Text comes only from Debian packages, fetched with `apt-get download` and
# unpacked with `dpkg-deb -x` into WORK: nothing is installed except zstd when
# it is missing.  Needs apt (root only for `apt-get update`/install when the
# package lists or zstd are missing), python3 (standard library) and ~120 MB
# in WORK.  Same package versions + same zstd => the same bytes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/data/sample
WORK=/var/tmp/pile-sample-work
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-sample: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

OUT=$(realpath -m -- "$OUT")
WORK=$(realpath -m -- "$WORK")
cd "$ROOT"

log() { echo "make-sample: $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else log "need root for: $*"; exit 1
  fi
}

command -v python3 >/dev/null || { log "python3 is required"; exit 1; }
if ! command -v zstd >/dev/null; then
  log "installing zstd"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zstd >/dev/null
fi

# bible-kjv only for its reader program (the KJV data file uses a private
# compression); every other package is a text source.
PKGS=(golang-1.19-src libpython3.11-stdlib python3.11-doc bible-kjv-text bible-kjv
      sword-text-web dict-devil jargon-text wordnet-base)

mkdir -p "$WORK/debs" "$WORK/root"
WORK=$(cd "$WORK" && pwd)
missing=()
for p in "${PKGS[@]}"; do
  compgen -G "$WORK/debs/${p}_*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "downloading ${missing[*]}"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
    as_root apt-get update -qq
  fi
  # apt's download sandbox user must be able to write here
  chmod 777 "$WORK/debs" 2>/dev/null || true
  (cd "$WORK/debs" && apt-get download -qq "${missing[@]}") 2>&1 |
    { grep -v 'Download is performed unsandboxed' >&2 || true; }
fi

: > "$WORK/versions.txt"
for p in "${PKGS[@]}"; do
  deb=$(compgen -G "$WORK/debs/${p}_*.deb" | sort -V | tail -1 || true)
  [ -n "$deb" ] || { log "package $p did not download"; exit 1; }
  echo "$p $(dpkg-deb -f "$deb" Version)" >> "$WORK/versions.txt"
  if [ "$(cat "$WORK/root/$p/.unpacked" 2>/dev/null)" != "$(basename "$deb")" ]; then
    rm -rf "$WORK/root/$p"
    mkdir -p "$WORK/root/$p"
    dpkg-deb -x "$deb" "$WORK/root/$p"
    basename "$deb" > "$WORK/root/$p/.unpacked"
  fi
done

mkdir -p "$OUT"
rm -rf "$OUT/train" "$OUT/licenses"
log "assembling into $OUT"
python3 tools/make_sample.py --root "$WORK/root" --bible "$WORK/root/bible-kjv/usr/bin/bible" \
  --versions "$WORK/versions.txt" --out "$OUT" > "$WORK/stats.md"

# The licences travel with the text: each package's copyright file, as shipped.
mkdir -p "$OUT/licenses"
for p in "${PKGS[@]}"; do
  [ "$p" = bible-kjv ] && continue
  f=$(find "$WORK/root/$p/usr/share/doc" -name copyright -print -quit)
  [ -n "$f" ] || f=$(find -L "$WORK/root/$p/usr/share/doc" -name copyright -print -quit 2>/dev/null || true)
  if [ -z "$f" ]; then  # libpython3.11-stdlib's doc folder is a symlink to -minimal's
    f=$(find "$WORK/root/python3.11-doc/usr/share/doc" -name copyright -print -quit)
  fi
  cp "$f" "$OUT/licenses/$p.copyright"
done
{
  echo "Debian packages (name version); $(zstd -V | head -1)"
  cat "$WORK/versions.txt"
} > "$OUT/VERSIONS.txt"
cat "$WORK/stats.md"
log "done: $(du -sh "$OUT" | cut -f1) in $OUT (counts above; data/sample/README.md quotes them)"
