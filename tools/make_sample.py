#!/usr/bin/env python3
"""Assemble data/sample/: a few MB of real, freely licensed text in The Pile's
layout, so the demo runs without a dataset download.  make-sample.sh unpacks
the Debian packages first; this file only reads the unpacked trees.

Deterministic: candidates of each source are ranked by sha1 of their id and
taken as a prefix of that ranking up to the source's quota; validation is a
per-subset sha1 ranking (so every subset reaches val); output order is a third
sha1 ranking.  Same package versions and zstd version => same bytes.
Standard library only.
"""
import argparse
import gzip
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib

KB = 1000
MB = 1000 * 1000
VAL_PERMILLE = 15


def sha(s):
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


class Doc:
    """One output line: its text, its Pile subset, and where it came from."""

    __slots__ = ("id", "subset", "pkg", "path", "license", "text", "line")

    def __init__(self, id, subset, pkg, path, license, text):
        self.id, self.subset, self.pkg, self.path = id, subset, pkg, path
        self.license, self.text = license, text
        self.line = json.dumps({"text": text, "meta": {"pile_set_name": subset}},
                               ensure_ascii=False) + "\n"

    @property
    def nbytes(self):
        return len(self.line.encode("utf-8"))


def utf8_file(path):
    """Contents as str, or None when not strict UTF-8 or binary (NUL)."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def files_under(base, keep):
    """Sorted relative paths of regular files under base for which keep(rel)."""
    out = []
    for dp, dns, fns in os.walk(base):
        dns.sort()
        for fn in fns:
            p = os.path.join(dp, fn)
            rel = os.path.relpath(p, base)
            if not os.path.islink(p) and os.path.isfile(p) and keep(rel):
                out.append(rel)
    return sorted(out)


def pack(units, target=30 * KB, minimum=8 * KB):
    """Concatenate consecutive units into pieces of about target characters;
    a short tail joins the piece before it.  ''.join(result) == ''.join(units)."""
    pieces, cur, n = [], [], 0
    for u in units:
        cur.append(u)
        n += len(u)
        if n >= target:
            pieces.append("".join(cur))
            cur, n = [], 0
    if cur:
        if pieces and n < minimum:
            pieces[-1] += "".join(cur)
        else:
            pieces.append("".join(cur))
    return pieces


def paragraphs(text):
    """Paragraphs with their trailing blank lines kept, so nothing is lost."""
    return [p for p in re.split(r"(?<=\n\n)(?=[^\n])", text) if p]


# ----------------------------------------------------------------- sources
# Each returns candidate Docs; quotas (JSONL bytes) are applied afterwards.

GO_EXCLUDE = (
    # not under the Go licence or not the standard library (see the package's
    # debian/copyright): the toolchain (some X11 files, vendored Apache-2.0
    # code), vendored x/ packages, test data, and two files of other origin.
    "cmd/", "vendor/", "debug/elf/elf.go", "image/jpeg/idct.go",
)


def src_go(root):
    base = os.path.join(root, "golang-1.19-src", "usr/share/go-1.19/src")
    docs = []
    for rel in files_under(base, lambda r: r.endswith(".go")):
        if rel.startswith(GO_EXCLUDE) or "/testdata/" in rel:
            continue
        if os.path.getsize(os.path.join(base, rel)) > 100 * KB:
            continue  # generated tables: one would eat the quota
        t = utf8_file(os.path.join(base, rel))
        if t and t.strip():
            docs.append(Doc("go1.19/src/" + rel, "Github", "golang-1.19-src",
                            "usr/share/go-1.19/src/" + rel, "BSD-3-Clause (Go)", t))
    return docs


PY_EXCLUDE = (
    # modules the package's copyright file lists under licences other than the
    # PSF's (all permissive, but one licence per source keeps SOURCES honest)
    "logging/", "multiprocessing/", "sqlite3/", "asyncio/", "tarfile.py", "turtle.py",
    "config-", "lib-dynload/", "site-packages/", "dist-packages/",
)


def src_python(root):
    base = os.path.join(root, "libpython3.11-stdlib", "usr/lib/python3.11")
    docs = []
    for rel in files_under(base, lambda r: r.endswith(".py")):
        if rel.startswith(PY_EXCLUDE) or os.path.getsize(os.path.join(base, rel)) > 100 * KB:
            continue
        t = utf8_file(os.path.join(base, rel))
        if t and t.strip():
            docs.append(Doc("cpython3.11/Lib/" + rel, "Github", "libpython3.11-stdlib",
                            "usr/lib/python3.11/" + rel, "PSF-2.0", t))
    return docs


def src_pydoc(root):
    base = os.path.join(root, "python3.11-doc", "usr/share/doc/python3.11/html/_sources")
    docs = []
    for rel in files_under(base, lambda r: r.endswith(".txt")):
        t = utf8_file(os.path.join(base, rel))
        if not t or not t.strip():
            continue
        pieces = [t] if len(t) <= 80 * KB else pack(paragraphs(t), target=40 * KB)
        for i, c in enumerate(pieces):
            docs.append(Doc("python3.11-doc/%s#%d" % (rel, i), "Pile-CC", "python3.11-doc",
                            "usr/share/doc/python3.11/html/_sources/" + rel,
                            "PSF-2.0 (documentation)", c))
    return docs


def src_kjv(root, bible):
    """The King James Bible, one document per book, through the BRS reader of
    the bible-kjv package (its data file is compressed in a private format)."""
    data = os.path.join(root, "bible-kjv-text", "usr/lib")
    r = subprocess.run([bible, "-l100000", "-p", data, "Genesis1:1-Revelation22:21"],
                       check=True, capture_output=True,
                       env=dict(os.environ, COLUMNS="100000", LC_ALL="C.UTF-8"))
    books = {}
    cur = None
    for line in r.stdout.decode("utf-8").split("\n"):
        m = re.match(r"^(\S.*) (\d+)$", line)
        if m:
            cur = m.group(1)
            part = books.setdefault(cur, [])
            part.append(("\n" if part else "") + "Chapter %s\n\n" % m.group(2))
        elif cur is not None and line.strip():
            m = re.match(r"^\s*(\d+) (.*)$", line)
            books[cur].append("%s %s\n" % (m.group(1), m.group(2).rstrip()) if m else line.strip() + "\n")
    docs = []
    for i, (name, lines) in enumerate(books.items()):
        text = "The Holy Bible, King James Version\n\n%s\n\n" % name + "".join(lines)
        docs.append(Doc("kjv/%02d-%s" % (i + 1, name.replace(" ", "_")), "Gutenberg (PG-19)",
                        "bible-kjv-text", "usr/lib/bible.data#" + name, "public domain", text))
    return docs


def osis_to_text(s):
    # a footnote often stands where the space between two words was
    s = re.sub(r"<note\b.*?</note>", " ", s, flags=re.S)
    s = re.sub(r"<title\b.*?</title>", "", s, flags=re.S)
    s = re.sub(r"<[^>]*>", "", s)
    s = s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    s = re.sub(r"\s+", " ", s).strip()
    return re.sub(r" ([,.;:!?’”)])", r"\1", s)


def src_web(root):
    """The World English Bible, one document per book, read straight from the
    SWORD zText module: .bzs lists zlib blocks (offset, size, unpacked size:
    3 x u32 LE), .bzv one entry per verse slot (block, offset: u32 LE; size:
    u16 LE), in versification order with a heading slot before each book and
    chapter.  The OSIS markup marks books and chapters; verse n is the n-th
    slot after its chapter's heading."""
    mod = os.path.join(root, "sword-text-web", "usr/share/sword/modules/texts/ztext/engWEB2015eb")
    books = []  # (name, [lines])
    for testament in ("ot", "nt"):
        rd = lambda ext: open(os.path.join(mod, testament + "." + ext), "rb").read()
        bzs, bzv, bzz = rd("bzs"), rd("bzv"), rd("bzz")
        blocks, cache = [struct.unpack_from("<III", bzs, 12 * i) for i in range(len(bzs) // 12)], {}

        def entry(i):
            b, off, size = struct.unpack_from("<IIH", bzv, 10 * i)
            if size == 0:
                return ""
            if b not in cache:
                o, n, _ = blocks[b]
                cache[b] = zlib.decompress(bzz[o:o + n])
            return cache[b][off:off + size].decode("utf-8")

        verse = None
        for i in range(len(bzv) // 10):
            raw = entry(i)
            names = re.findall(r'<milestone n="([^"]+)" type="x-usfm-h"/>', raw)
            if names and 'type="book"' in raw:  # the last: Genesis follows the preface
                books.append((names[-1], []))
                verse = None
                continue
            m = re.search(r'<chapter\b[^>]*\bn="(\d+)"[^>]*\bsID=', raw)
            if m and books:
                lines = books[-1][1]
                lines.append(("\n" if lines else "") + "Chapter %s\n\n" % m.group(1))
                verse = 0
                continue
            if verse is None:
                continue
            verse += 1
            t = osis_to_text(raw)
            if t:
                books[-1][1].append("%d %s\n" % (verse, t))
    docs = []
    for i, (name, lines) in enumerate(books):
        if not lines:
            continue
        text = "World English Bible\n\n%s\n\n" % name + "".join(lines)
        docs.append(Doc("web/%02d-%s" % (i + 1, name.replace(" ", "_")), "Gutenberg (PG-19)",
                        "sword-text-web", "usr/share/sword/modules/texts/ztext/engWEB2015eb#" + name,
                        "public domain", text))
    return docs


def dictd(index, dz):
    """(headword, definition) of a dictd database in data order, skipping its
    00-database-* metadata entries.  Offsets in the index are base64 numbers."""
    digits = {c: i for i, c in enumerate(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

    def num(s):
        n = 0
        for c in s:
            n = n * 64 + digits[c]
        return n

    data = gzip.open(dz).read()
    spans = {}
    with open(index, encoding="utf-8") as f:
        for line in f:
            word, off, size = line.rstrip("\n").split("\t")[:3]
            if word.startswith(("00-database", "00database")):
                continue
            spans.setdefault((num(off), num(size)), word)
    out = []
    for (off, size), word in sorted(spans.items()):
        t = data[off:off + size].decode("utf-8")
        out.append((word, t if t.endswith("\n") else t + "\n"))
    return out


def src_devil(root):
    d = os.path.join(root, "dict-devil", "usr/share/dictd")
    ents = dictd(os.path.join(d, "devil.index"), os.path.join(d, "devil.dict.dz"))
    text = "The Devil's Dictionary\nby Ambrose Bierce\n\n" + "\n".join(t for _, t in ents)
    return [Doc("devil/the-devils-dictionary", "Gutenberg (PG-19)", "dict-devil",
                "usr/share/dictd/devil.dict.dz", "public domain", text)]


def src_jargon(root):
    t = utf8_file(os.path.join(root, "jargon-text", "usr/share/doc/jargon-text/jargon.txt.gz"))
    return [Doc("jargon/%04d" % (i + 1), "Wikipedia (en)", "jargon-text",
                "usr/share/doc/jargon-text/jargon.txt.gz", "public domain", c)
            for i, c in enumerate(pack(paragraphs(t)))]


def src_wordnet(root):
    """WordNet synsets as gloss lines ('dog, domestic dog (n.): ...'), packed
    into documents per part of speech.  data.* lines: offset lex_filenum
    ss_type w_cnt(hex) word lex_id ... | gloss."""
    docs = []
    for pos, tag in (("noun", "n."), ("verb", "v."), ("adj", "adj."), ("adv", "adv.")):
        lines = []
        with open(os.path.join(root, "wordnet-base", "usr/share/wordnet", "data." + pos),
                  encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # the licence header of each data file
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                words = [re.sub(r"\((a|p|ip)\)$", "", fields[4 + 2 * k]).replace("_", " ")
                         for k in range(int(fields[3], 16))]
                lines.append("%s (%s): %s\n" % (", ".join(words), tag, gloss.strip()))
        for i, c in enumerate(pack(lines)):
            docs.append(Doc("wordnet/%s/%04d" % (pos, i + 1), "Wikipedia (en)", "wordnet-base",
                            "usr/share/wordnet/data." + pos, "WordNet-3.0", c))
    return docs


# name, candidates, quota in JSONL bytes (None: all of it)
def sources(root, bible):
    return [
        ("go", lambda: src_go(root), 3000 * KB),
        ("cpython", lambda: src_python(root), 1500 * KB),
        ("python-doc", lambda: src_pydoc(root), 1400 * KB),
        ("kjv", lambda: src_kjv(root, bible), 900 * KB),
        ("web", lambda: src_web(root), 900 * KB),
        ("devil", lambda: src_devil(root), None),
        ("jargon", lambda: src_jargon(root), 700 * KB),
        ("wordnet", lambda: src_wordnet(root), 900 * KB),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="one unpacked tree per package")
    ap.add_argument("--bible", required=True, help="the bible-kjv reader program")
    ap.add_argument("--versions", required=True, help="'package version' lines")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    versions = dict(l.split() for l in open(a.versions) if l.strip())
    picked = []
    for name, make, quota in sources(a.root, a.bible):
        cands = sorted(make(), key=lambda d: sha("pick:" + d.id))
        took, n = [], 0
        for d in cands:
            if quota is not None and n >= quota:
                break
            took.append(d)
            n += d.nbytes
        print("  %-10s %5d candidates, took %4d (%.2f MB)" % (name, len(cands), len(took), n / MB),
              file=sys.stderr)
        picked += took
    assert len({d.id for d in picked}) == len(picked), "duplicate document ids"

    # ~1.5% of each package's documents to val, at least one from each package
    # that gave ten or more, so that val holds every kind of text
    val_ids = set()
    for pkg in sorted({d.pkg for d in picked}):
        ds = sorted((d for d in picked if d.pkg == pkg), key=lambda d: sha("val:" + d.id))
        if len(ds) >= 10:
            val_ids.update(d.id for d in ds[:max(1, round(len(ds) * VAL_PERMILLE / 1000))])
    order = sorted(picked, key=lambda d: sha("order:" + d.id))
    val = [d for d in order if d.id in val_ids]
    train = [d for d in order if d.id not in val_ids]
    half = sum(d.nbytes for d in train) / 2
    acc, cut = 0, len(train)
    for i, d in enumerate(train):
        if acc >= half:
            cut = i
            break
        acc += d.nbytes
    files = [("train/00.jsonl", train[:cut]), ("train/01.jsonl", train[cut:]), ("val.jsonl", val)]

    os.makedirs(os.path.join(a.out, "train"), exist_ok=True)
    rows = ["file\tline\tpile_set_name\tpackage\tversion\tpath\tlicense\tdoc_id\tjson_bytes\n"]
    for rel, docs in files:
        path = os.path.join(a.out, rel)
        with open(path, "w", encoding="utf-8", newline="") as f:
            for i, d in enumerate(docs):
                f.write(d.line)
                rows.append("%s.zst\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n" % (
                    rel, i + 1, d.subset, d.pkg, versions[d.pkg], d.path, d.license, d.id,
                    d.nbytes))
        subprocess.run(["zstd", "-q", "-f", "-19", "-T1", "--rm", path, "-o", path + ".zst"],
                       check=True)
    with open(os.path.join(a.out, "SOURCES.tsv"), "w", encoding="utf-8", newline="") as f:
        f.writelines(rows)

    # the counts table the README quotes
    stats = {}
    for rel, docs in files:
        for d in docs:
            s = stats.setdefault((d.subset, d.pkg), [0, 0, 0, 0])
            s[0 if rel.startswith("train") else 1] += 1
            s[2] += len(d.text.encode("utf-8"))
            s[3] += d.nbytes
    out = ["| pile_set_name | package | license | train docs | val docs | text MB |",
           "|---|---|---|---:|---:|---:|"]
    lic = {d.pkg: d.license for d in picked}
    for (subset, pkg), (tr, va, tb, jb) in sorted(stats.items()):
        out.append("| %s | %s %s | %s | %d | %d | %.2f |" % (subset, pkg, versions[pkg], lic[pkg],
                                                             tr, va, tb / MB))
    out.append("")
    for rel, docs in files:
        out.append("- `%s.zst`: %d documents, %.2f MB of JSON lines, %d bytes compressed" % (
            rel, len(docs), sum(d.nbytes for d in docs) / MB,
            os.path.getsize(os.path.join(a.out, rel + ".zst"))))
    out.append("- in all: %d documents, %.2f MB of UTF-8 text" % (
        len(picked), sum(len(d.text.encode("utf-8")) for d in picked) / MB))
    print("\n".join(out))


if __name__ == "__main__":
    main()
