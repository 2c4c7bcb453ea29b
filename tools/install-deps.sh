#!/usr/bin/env bash
# install-deps.sh: install what building and testing pile needs on Debian 12.
#
#   tools/install-deps.sh [--no-python]
#
# Debian packages (apt-get, as root or through sudo) for the build, then the
# Python packages the tests use as independent references (numpy, tiktoken,
# tokenizers from PyPI, into whichever python3 is first on PATH), then the
# trainer's reference set (torch, transformers, safetensors, tensorboard,
# and DeepSpeed for the loss scaler's rules): about 1.3 GB of wheels, ~40 s
# to download and ~20 s to unpack on a CI machine. Failing to install that
# set is only a warning: the 'reference' tests then skip and say why.
# --no-python skips the Python part: the tools themselves never need Python.
# Idempotent, and silent when everything is already there (then it needs
# neither root nor a network).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-python) PYTHON=0; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-deps: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "install-deps: $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else log "need root (or sudo) for: $*"; return 1
  fi
}
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

# (clang + libclang-rt-dev: libFuzzer and the sanitizer runtimes for
# tools/fuzz.sh, which --no-install-recommends would leave out; llvm:
# llvm-symbolizer, for file:line in sanitizer reports; Open MPI: the "mpi"
# communicator and the mpirun its tests launch; iproute2: `ip netns`, the
# two "nodes" of tests/comm_netns.sh)
APT_PKGS=(meson ninja-build pkg-config gcc g++ clang libclang-rt-dev llvm
          libzstd-dev zlib1g-dev libsimdjson-dev libuv1-dev libxxhash-dev libpcre2-dev libutf8proc-dev
          libopenblas-dev libopenblas-openmp-dev zstd python3
          libopenmpi-dev openmpi-bin iproute2)
PY_MODULES=(numpy tiktoken tokenizers)

missing=()
for p in "${APT_PKGS[@]}"; do installed "$p" || missing+=("$p"); done

# pip for the python3 on PATH: Debian's own needs python3-pip; a pyenv or
# virtualenv python3 brings its own.
py_ok() { command -v python3 >/dev/null && python3 -c "import $(IFS=,; echo "${PY_MODULES[*]}")" 2>/dev/null; }
py_missing=0
if [ $PYTHON = 1 ] && ! py_ok; then
  py_missing=1
  if ! python3 -m pip --version >/dev/null 2>&1 && ! installed python3-pip; then
    missing+=(python3-pip)
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pip_flags: the flags pip install needs for the python3 on PATH.
pip_flags() {
  flags=(--quiet --disable-pip-version-check)
  # Debian marks its system Python externally managed (PEP 668); a venv or
  # pyenv Python is not, and must not be given the override.
  if python3 - <<'EOF'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
EOF
  then flags+=(--break-system-packages); fi
  if ! python3 -c 'import os, sys, sysconfig; sys.exit(0 if os.access(sysconfig.get_paths()["purelib"], os.W_OK) else 1)'; then
    flags+=(--user)
  fi
}

if [ $py_missing = 1 ] && ! py_ok; then
  pip_flags
  log "pip installing ${PY_MODULES[*]} for $(command -v python3)"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install "${flags[@]}" "${PY_MODULES[@]}"
  py_ok || { log "python3 still cannot import ${PY_MODULES[*]}"; exit 1; }
fi

# The trainer's references (tests/reference, bench/train-cpu.sh). PyPI's
# torch is the CUDA build; on a machine without a GPU it imports only with
# these CUDA wheels beside it, so torch and they go in with --no-deps (the
# rest of its CUDA libraries come from /usr/local/cuda on CI machines),
# then torch's pure-Python dependencies, then the others with theirs. The
# versions are the ones torch 2.15.0 names (/usr/local/cuda's NCCL 2.28 lacks
# symbols it needs, hence its own).
TORCH_PKGS=(torch==2.15.0 nvidia-cufile nvidia-cusparselt-cu13==0.8.1 nvidia-nvshmem-cu13==3.7.2
            nvidia-nccl-cu13==2.30.7)
TORCH_PY_DEPS=(filelock fsspec jinja2 networkx sympy typing-extensions setuptools)
REF_PKGS=(transformers safetensors tensorboard)
ref_ok() { python3 -c 'import torch, transformers, safetensors, tensorboard' 2>/dev/null; }
if [ $PYTHON = 1 ] && ! ref_ok; then
  pip_flags
  log "pip installing the reference set (torch, transformers, safetensors, tensorboard; ~1.3 GB)"
  if ! python3 -c 'import torch' 2>/dev/null; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install "${flags[@]}" --no-deps "${TORCH_PKGS[@]}" ||
      log "warning: torch did not install"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install "${flags[@]}" "${TORCH_PY_DEPS[@]}" ||
      log "warning: torch's Python dependencies did not install"
  fi
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install "${flags[@]}" "${REF_PKGS[@]}" ||
    log "warning: ${REF_PKGS[*]} did not install"
  if ! ref_ok; then
    log "warning: python3 cannot import the reference set; the 'reference' tests will skip:"
    python3 -c 'import torch, transformers, safetensors, tensorboard' 2>&1 | tail -1 | sed 's/^/install-deps:   /' >&2
  fi
fi

# DeepSpeed, whose DynamicLossScaler tests/reference/loss_scaler_ref.py
# compares ours with, pinned to the version whose rules trainer/loss_scaler.h
# follows. Its sdist builds as pure Python; --no-deps, because what it
# requires besides torch is for its GPU kernels and launcher: on the CPU
# (DS_ACCELERATOR=cpu) it imports with these few small modules (~5 MB).
DS_PKGS=(deepspeed==0.19.8)
DS_PY_DEPS=(psutil hjson einops msgpack pydantic)
ds_ok() {
  DS_ACCELERATOR=cpu python3 -c 'import deepspeed, sys
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler
sys.exit(deepspeed.__version__ != "0.19.8")' 2>/dev/null
}
if [ $PYTHON = 1 ] && ! ds_ok && python3 -c 'import torch' 2>/dev/null; then
  pip_flags
  log "pip installing ${DS_PKGS[*]} (--no-deps) and ${DS_PY_DEPS[*]}"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install "${flags[@]}" --no-deps "${DS_PKGS[@]}" &&
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install "${flags[@]}" "${DS_PY_DEPS[@]}" ||
    log "warning: deepspeed did not install"
  ds_ok || log "warning: python3 cannot import deepspeed ${DS_PKGS[*]#deepspeed==}; the loss-scaler-ref test will skip"
fi
