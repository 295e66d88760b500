#!/usr/bin/env bash
# Install the peer methods (GraphST, SpaGCN, BANKSY, CellCharter) in their own virtual environment,
# outside the repository, plus R and mclust for GraphST's default clustering. Idempotent: run it again
# and it only adds what is missing.
#
#   bash benchmarks/peers/install.sh                 # venv at /work/peers-venv
#   PEERS_VENV=$HOME/peers-venv bash benchmarks/peers/install.sh
#   SKIP_APT=1 bash ...                              # R + mclust already there (or not root)
#
# Why each piece (see README.md in this folder):
#   torch 2.13.0 first    CPU wheel; an unpinned torch from the index would pull the CUDA stack
#   graphst 1.1.1         + POT (spot distances), scikit-misc (Seurat v3 HVGs), rpy2 (mclust); the wheel
#                         declares only `requests`, so these are listed here
#   r-base-core, r-cran-mclust   GraphST's default clustering is R's mclust through rpy2
#   rpy2 3.5.17           the 3.6 line needs R >= 4.5 (R_getVar); Debian 12 ships R 4.2
#   spagcn 1.2.7          + louvain (its initialisation), setuptools < 81 (louvain imports pkg_resources)
#   pybanksy 1.3.5        import name `banksy`
#   pynndescent 0.5.13    0.7.0 returns csr_array, which scanpy 1.11.5's neighbors (used by SpaGCN's louvain
#                         initialisation) calls .getnnz on: fails from about 4096 spots
#   cellcharter 0.3.7     + squidpy, torchgmm (pulled by it)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-/work/peers-venv}"
PYTHON="${PEERS_PYTHON:-python3.11}"

if [ -z "${SKIP_APT:-}" ]; then
  if ! Rscript -e 'suppressMessages(library(mclust))' >/dev/null 2>&1; then
    if [ "$(id -u)" != "0" ]; then
      echo "R with mclust is missing and this is not root: run 'apt-get install -y r-base-core r-cran-mclust'" >&2
      echo "as root (or set SKIP_APT=1 to go on without GraphST's mclust)" >&2
      exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends r-base-core r-base-dev r-cran-mclust
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

# torch first, pinned, so that nothing later resolves another build
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  "${PIP[@]}" install "torch==2.13.0"
fi

# the peers and what their code imports but their metadata omits; versions held by the constraints file
# (a full freeze of a working environment, torch excluded)
"${PIP[@]}" install -c "$HERE/constraints-peers.txt" \
  "graphst==1.1.1" "spagcn==1.2.7" "pybanksy==1.3.5" "cellcharter==0.3.7" \
  "rpy2==3.5.17" "POT" "scikit-misc" "louvain" "setuptools<81" "pynndescent==0.5.13" "scanpy" "tqdm"

# the split rpy2 packages of the 3.6 line shadow 3.5.17 if an earlier install left them behind
if "${PIP[@]}" show rpy2-rinterface >/dev/null 2>&1; then
  "${PIP[@]}" uninstall -y rpy2-rinterface rpy2-robjects
  "${PIP[@]}" install --force-reinstall --no-deps "rpy2==3.5.17"
fi

"$VENV/bin/python" - <<'EOF'
import importlib
for mod in ("GraphST", "SpaGCN", "banksy", "cellcharter", "ot", "louvain", "skmisc"):
    importlib.import_module(mod)
try:
    import rpy2.robjects as ro
    ro.r("suppressMessages(library(mclust))")
    print("peers venv ready (R mclust available)")
except Exception as exc:  # GraphST then fails at its clustering step, recorded as such
    print(f"peers venv ready, but R mclust is not usable: {exc}")
EOF
