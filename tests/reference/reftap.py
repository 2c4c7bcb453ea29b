"""TAP output for the reference checks in this folder: a plan at the end,
one `ok`/`not ok` line per check with `#` notes, exit 77 for a skip."""

import logging
import os
import subprocess
import sys

_count = 0
_failed = 0


def skip(why):
    print("1..0 # SKIP " + why)
    sys.exit(77)


def report(ok, name, *notes):
    global _count, _failed
    _count += 1
    _failed += not ok
    print("%s %d - %s" % ("ok" if ok else "not ok", _count, name))
    for n in notes:
        print("# " + n)
    sys.stdout.flush()


def done():
    """Prints the plan; the exit status for the checks so far."""
    print("1..%d" % _count)
    return 1 if _failed else 0


def run(cmd):
    """Runs cmd; its stdout, or RuntimeError with the tail of its stderr."""
    cmd = [str(c) for c in cmd]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()[-2000:]))
    return p.stdout


def main_of(main, what):
    """Exits with main()'s status; a tool that failed (RuntimeError from run)
    is one more failed check, named `what`."""
    try:
        sys.exit(main())
    except RuntimeError as e:
        report(False, what, str(e))
        sys.exit(done())


def need_deepspeed(version, follows):
    """Imports torch and deepspeed on the CPU (DS_ACCELERATOR=cpu; installed
    with --no-deps by tools/install-deps.sh) and returns deepspeed; skips
    (exit 77) when they cannot be imported, or when deepspeed is not
    `version`, the one whose rules `follows` (a file of ours) follows."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import torch  # noqa: F401  (deepspeed needs it; say so if it is what fails)
        import deepspeed
    except Exception as e:  # ImportError, or a dependency failing at import
        skip("needs torch and deepspeed (tools/install-deps.sh): %s: %s" % (type(e).__name__, e))
    if deepspeed.__version__ != version:
        skip("deepspeed %s installed; %s follows %s's rules" % (deepspeed.__version__, follows, version))
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    return deepspeed
