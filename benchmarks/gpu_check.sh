#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: build gencore with CUDA, test every backend on the GPU,
# run the quick benchmark suite and write the report. Everything lands in ${OUT:-./gpu_out}.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from anywhere in the checkout
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # here, without a GPU: the same stages on the CPU, small
#   bash benchmarks/gpu_check.sh --pack          # leave only summary.txt, gpu_check.log and one
#                                                # gpu_check_outputs.tar.gz in OUT (for runners that fetch
#                                                # only a few files back)
#
# Stages (each time-limited; a failed or timed-out stage is logged and the next one still runs):
#   env     what is installed (python, torch + CUDA, nvcc, GPU, triton, pytest-benchmark, matplotlib);
#           installs what is missing with pip (`pip install torch` only when torch is absent)
#   build   python setup.py build_ext --inplace, GENCORE_CUDA=1, TORCH_CUDA_ARCH_LIST from the GPU
#           (falls back to a CPU-only build if the CUDA build fails, so Triton still gets tested)
#   info    python -m gencore info
#   tests   python -m pytest tests -q, TRITON_INTERPRET unset (compiled Triton, CUDA kernels, every op
#           against the reference on the GPU); with pytest-xdist installed, GPU_CHECK_TEST_WORKERS (default
#           8, 0 = off) processes, one test file each, so the cold Triton compiles run in parallel
#   bench   each benchmarks/test_bench_*.py in --quick mode, GPU cases first, one JSON per file
#   report  python -m benchmarks.report over those JSON files -> $OUT/report/
# The whole script stays inside GPU_CHECK_BUDGET seconds (default 420: 7 minutes, plus at most 20 s per
# stage that ignores SIGINT): every stage gets at most what is left, and the report keeps its share.
#
# Environment: OUT (output folder), PYTHON (interpreter, default python3), GPU_CHECK_BUDGET (seconds),
# GPU_CHECK_BENCH_K (extra pytest -k filter for the benchmarks), MAX_JOBS (compile jobs).
set -uo pipefail

DRY_RUN=0
SKIP_BUILD=0
PACK=0
for arg in "$@"; do
  case "$arg" in
    --cpu-dry-run) DRY_RUN=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --pack) PACK=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | grep '^#'; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (use --cpu-dry-run, --skip-build, --pack)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET:-420}"
REPORT_RESERVE=40
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, not an installed gencore
export PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
SUMMARY="$OUT/summary.txt"
FAILED_STAGES=""
: > "$SUMMARY"
START=$SECONDS

log() { echo "[gpu_check $(date -u +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$OUT/gpu_check.log"; }

left() { echo $((BUDGET - (SECONDS - START))); }

# stage NAME CAP_SECONDS CMD...: run CMD with a limit of min(CAP, time left - report reserve),
# output to $OUT/NAME.log; records "NAME rc seconds" in the summary. Returns CMD's status.
stage() {
  local name="$1" cap="$2"
  shift 2
  local limit
  limit=$(( $(left) - REPORT_RESERVE ))
  [ "$name" = report ] && limit=$(left)
  [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt 10 ]; then
    log "$name: skipped, no time left"
    echo "$name skipped(no-time) 0s" >> "$SUMMARY"
    return 124
  fi
  log "$name: start (limit ${limit}s): $*"
  local t0=$SECONDS rc
  # SIGINT first so pytest ends its session cleanly and still writes its JSON; KILL 20 s later.
  if declare -F "$1" >/dev/null; then
    # A shell function: run it in a child bash (functions and variables it needs are exported).
    timeout -s INT -k 20 "$limit" bash -c '"$@"' _ "$@" > "$OUT/$name.log" 2>&1
  else
    timeout -s INT -k 20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  fi
  rc=$?
  local status=ok
  if [ $rc -eq 5 ] && [[ "$name" == bench_* ]]; then
    status="ok(no-tests-selected)"  # e.g. a file without GPU cases in the cuda pass
    rc=0
  elif [ $rc -eq 124 ] || [ $rc -eq 130 ] || [ $rc -eq 137 ]; then
    status="TIMEOUT(${limit}s)"
  elif [ $rc -ne 0 ]; then
    status="FAILED(rc=$rc)"
  fi
  [ $rc -ne 0 ] && FAILED_STAGES="$FAILED_STAGES $name"
  log "$name: $status in $((SECONDS - t0))s (log: $OUT/$name.log)"
  echo "$name $status $((SECONDS - t0))s" >> "$SUMMARY"
  tail -n 5 "$OUT/$name.log" | sed 's/^/    /'
  return $rc
}

# ---------------------------------------------------------------------------------------------------
# env: print what is present, install what is missing
# ---------------------------------------------------------------------------------------------------
env_report() {
  echo "date: $(date -u)"
  echo "host: $(uname -a)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) logical CPUs"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
    nvidia-smi
  else
    echo "nvidia-smi: not found"
  fi
  if command -v nvcc >/dev/null 2>&1; then nvcc --version | tail -n 2; else echo "nvcc: not on PATH"; fi
  "$PY" - <<'EOF'
import importlib, importlib.metadata as md
for dist in ("torch", "triton", "pytest", "pytest-benchmark", "matplotlib", "numpy", "ninja", "setuptools"):
    try:
        print(f"{dist}: {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"{dist}: MISSING")
try:
    import torch
    print("torch.version.cuda:", torch.version.cuda, "| cuda available:", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"gpu 0: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
    from torch.utils.cpp_extension import CUDA_HOME
    print("CUDA_HOME (torch):", CUDA_HOME)
except Exception as exc:
    print("torch import failed:", exc)
EOF
}

pip_install() {
  # Works in a venv, a user site, or a system Python that refuses plain installs (PEP 668).
  "$PY" -m pip install -q "$@" || "$PY" -m pip install -q --user "$@" \
    || "$PY" -m pip install -q --break-system-packages "$@"
}

env_setup() {
  env_report
  local missing
  missing=$("$PY" - <<'EOF'
import importlib.util as u
need = {"pytest": "pytest", "pytest_benchmark": "pytest-benchmark", "matplotlib": "matplotlib",
        "numpy": "numpy", "ninja": "ninja", "setuptools": "setuptools"}
print(" ".join(pkg for mod, pkg in need.items() if u.find_spec(mod) is None))
EOF
)
  if ! "$PY" -c "import torch" 2>/dev/null; then
    if [ "$DRY_RUN" = 1 ]; then
      echo "torch is not installed; dry run: not installing it"
    else
      echo "== pip install torch (not installed; the PyPI wheel for Linux x86-64 has CUDA)"
      pip_install torch || echo "pip install torch failed"
    fi
  elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
    # Replacing an installed torch in a time-limited stage could leave it half-installed: say so instead.
    echo "WARNING: the installed torch has no CUDA; GPU stages will skip. Install a CUDA build, e.g."
    echo "  $PY -m pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128"
  fi
  if [ -n "$missing" ]; then
    echo "== pip install $missing"
    # shellcheck disable=SC2086
    pip_install $missing || echo "pip install of $missing failed; later stages may fail"
  fi
  echo "== after set-up"
  env_report | tail -n 12
}

export PY DRY_RUN
export -f env_report pip_install env_setup
stage env 240 env_setup

# ---------------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------------
ARCH=$("$PY" -c "import torch; p = torch.cuda.get_device_capability(0); print(f'{p[0]}.{p[1]}')" 2>/dev/null || true)
export ARCH
build() {
  local cuda="$1"
  rm -rf build
  if [ "$cuda" = 1 ]; then
    echo "building with CUDA for TORCH_CUDA_ARCH_LIST=$ARCH"
    GENCORE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" "$PY" setup.py build_ext --inplace
  else
    echo "building without CUDA"
    GENCORE_CUDA=0 "$PY" setup.py build_ext --inplace
  fi
}

export -f build
if [ "$SKIP_BUILD" = 1 ]; then
  log "build: skipped (--skip-build)"
  echo "build skipped 0s" >> "$SUMMARY"
elif [ "$DRY_RUN" = 1 ] || [ -z "$ARCH" ]; then
  [ "$DRY_RUN" = 0 ] && log "build: no CUDA device visible to torch; building CPU-only"
  stage build 240 build 0
else
  stage build 240 build 1 || stage build_cpu_fallback 150 build 0
fi

# ---------------------------------------------------------------------------------------------------
# info, tests
# ---------------------------------------------------------------------------------------------------
stage info 60 "$PY" -m gencore info

if [ "$DRY_RUN" = 1 ]; then
  # The plumbing only: a small CPU subset (this machine has no GPU; the interpreter is slow).
  TEST_ARGS=(tests -q -x -k "not triton" -p no:cacheprovider)
  TEST_ENV=(env)
else
  TEST_ARGS=(tests -q -rs --durations=15 -p no:cacheprovider --junitxml="$OUT/tests.xml")
  TEST_ENV=(env -u TRITON_INTERPRET)  # compiled Triton on the GPU, not the interpreter
  # A fresh machine has no Triton cache: serially, the first compile of every kernel variant alone can
  # outlast the stage. One file per worker keeps each file's fixtures and backend state in one process.
  WORKERS="${GPU_CHECK_TEST_WORKERS:-8}"
  if [ "$WORKERS" -gt 0 ] && "$PY" -c "import xdist" 2>/dev/null; then
    TEST_ARGS+=(-n "$WORKERS" --dist loadfile)
  fi
fi
stage tests 150 "${TEST_ENV[@]}" "$PY" -m pytest "${TEST_ARGS[@]}"

# ---------------------------------------------------------------------------------------------------
# bench: one pytest per file (a timeout loses one file's results, not all), GPU cases first
# ---------------------------------------------------------------------------------------------------
mapfile -t BENCH_FILES < <(ls benchmarks/test_bench_*.py 2>/dev/null)
if [ "$DRY_RUN" = 1 ]; then
  BENCH_FILES=(benchmarks/test_bench_kl_normal.py)
  PASSES=("cpu")
else
  PASSES=("cuda" "cpu")
fi
export GENCORE_BENCH_QUICK=1
mkdir -p "$OUT/bench"
for pass in "${PASSES[@]}"; do
  runs_left=${#BENCH_FILES[@]}
  for f in "${BENCH_FILES[@]}"; do
    name="bench_${pass}_$(basename "$f" .py)"
    # GPU cases first, each file a fair share of what is left (a file that finishes early leaves more
    # for the next); the CPU pass gets only what the GPU pass left over.
    share=$(( ($(left) - REPORT_RESERVE) / runs_left ))
    runs_left=$((runs_left - 1))
    if [ "$pass" = cuda ]; then k="cuda"; else k="not cuda"; fi
    [ -n "${GPU_CHECK_BENCH_K:-}" ] && k="($k) and (${GPU_CHECK_BENCH_K})"
    stage "$name" "$share" "$PY" -m pytest "$f" --quick -q -p no:cacheprovider \
      -k "$k" --benchmark-json="$OUT/bench/$name.json"
  done
done

# ---------------------------------------------------------------------------------------------------
# report (always)
# ---------------------------------------------------------------------------------------------------
mapfile -t JSONS < <(find "$OUT/bench" -name '*.json' -size +0 | sort)
if [ ${#JSONS[@]} -gt 0 ]; then
  title="gencore benchmarks, quick mode"
  [ "$DRY_RUN" = 1 ] && title="$title (CPU dry run of gpu_check.sh)"
  stage report 60 "$PY" -m benchmarks.report "${JSONS[@]}" --out "$OUT/report" --title "$title" --quiet
else
  log "report: no benchmark JSON was written"
  echo "report skipped(no-json) 0s" >> "$SUMMARY"
fi

log "done in $((SECONDS - START))s; summary:"
sed 's/^/    /' "$SUMMARY" | tee -a "$OUT/gpu_check.log"
if [ "$PACK" = 1 ]; then
  log "outputs: $OUT (the rest in gpu_check_outputs.tar.gz; report: report/benchmark_report.md inside it)"
else
  log "outputs: $OUT (report: $OUT/report/benchmark_report.md)"
fi
if [ "$PACK" = 1 ]; then
  # Everything but the summary and this log into one archive, the originals removed.
  mapfile -t PACKED < <(cd "$OUT" && ls -A | grep -v -x -e summary.txt -e gpu_check.log -e gpu_check_outputs.tar.gz)
  if [ ${#PACKED[@]} -gt 0 ] && tar -czf "$OUT/gpu_check_outputs.tar.gz" -C "$OUT" "${PACKED[@]}"; then
    (cd "$OUT" && rm -rf -- "${PACKED[@]}")
    log "packed ${#PACKED[@]} entries into $OUT/gpu_check_outputs.tar.gz"
  fi
fi
if [ -n "$FAILED_STAGES" ]; then
  log "failed or timed out:$FAILED_STAGES"
  exit 1
fi
