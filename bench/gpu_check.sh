#!/usr/bin/env bash
# The GPU path of kdpipe train, measured from a bare start on an offline machine, in 8 minutes.
#
#   bench/gpu_check.sh [--cpu-dry-run] [OUT_DIR]
#
# 1. installs the wheels listed in bench/gpu-wheels.txt from wheels/ (`make gpu-wheels`
#    downloads them) into a scratch folder, offline and without dependencies;
# 2. checks the torch it finds: CUDA build, a GPU with bf16, the carried packages imported
#    and their requirements met;
# 3. runs the parts of bench/gpu_parts.py, each in its own process under its own time limit
#    (and never past the 8-minute budget): LoRA bf16 with kdpipe's settings vs SFTTrainer at
#    TRL's defaults (0.5B and 1.5B shapes), full fine-tuning (0.5B), the Distilling
#    step-by-step loss vs the plain loss, QLoRA when bitsandbytes is importable;
# 4. writes gpu-check.json, gpu-check.md and gpu-check.log to OUT_DIR (default: $OUT, else
#    ./gpu-check), whatever failed.
#
# --cpu-dry-run: the same steps on the tiny shape with a few steps, on the current Python
# environment (no wheels installed): seconds, and a check that the script still works.
# PYTHON (default python3) picks the interpreter; GPU_CHECK_LIMIT_S caps every part's limit.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
DRY=""
OUT_DIR=""
for arg in "$@"; do
  case "$arg" in
    --cpu-dry-run) DRY="--dry-run" ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) OUT_DIR=$arg ;;
  esac
done
OUT_DIR=${OUT_DIR:-${OUT:-gpu-check}}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# The parts' scratch files (random models: gigabytes) go in WORK, so that a part killed at its limit
# leaves nothing behind.
mkdir -p "$WORK/tmp" && export TMPDIR=$WORK/tmp
LOG=$OUT_DIR/gpu-check.log
: >"$LOG"
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false
# Tiny shapes gain nothing from threads, and lose much on a busy machine.
[ -n "$DRY" ] && export OMP_NUM_THREADS=1
START=$SECONDS
BUDGET=$($PY -c 'import sys; sys.path.insert(0, "bench"); import gpu_parts; print(gpu_parts.BUDGET_S)' 2>>"$LOG") || BUDGET=480

say() { echo "gpu_check: $*" | tee -a "$LOG"; }

# One line of JSON for a part the shell itself settles (install, or a part never started).
part_json() {  # name status reason
  $PY -c 'import json, sys; print(json.dumps({"part": sys.argv[1], "status": sys.argv[2], "reason": sys.argv[3] or None}))' \
    "$1" "$2" "$3" >"$WORK/$1.json"
}

# ---- 1. wheels
if [ -n "$DRY" ]; then
  part_json install skipped "dry run: the current Python environment is used"
elif ! ls wheels/*.whl >/dev/null 2>&1; then
  part_json install skipped "no wheels/ folder: using the packages installed here (make gpu-wheels fetches them)"
else
  SITE=$WORK/site
  if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
       --target "$SITE" --find-links wheels -r bench/gpu-wheels.txt >>"$LOG" 2>&1; then
    export PYTHONPATH=$REPO:$SITE KDPIPE_GPU_SITE=$SITE
    part_json install ok ""
  else
    part_json install failed "pip could not install bench/gpu-wheels.txt from wheels/ (see gpu-check.log)"
  fi
fi
say "install: $(sed -n 's/.*"status": "\([a-z]*\)".*/\1/p' "$WORK/install.json")"

# ---- 2 and 3. the check, then the parts, each under its own limit
CHECK_OK=1
while read -r name limit; do
  left=$((BUDGET - (SECONDS - START) - 15))  # 15 s kept for the report
  if [ "$CHECK_OK" = 0 ]; then
    part_json "$name" skipped "the environment check failed"
    say "$name: skipped (the environment check failed)"
    continue
  fi
  if [ "$left" -lt 10 ]; then
    part_json "$name" skipped "not started: the ${BUDGET} s budget is spent"
    say "$name: skipped (budget spent)"
    continue
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  [ -n "${GPU_CHECK_LIMIT_S:-}" ] && [ "$limit" -gt "$GPU_CHECK_LIMIT_S" ] && limit=$GPU_CHECK_LIMIT_S
  say "$name: running (limit ${limit} s)"
  began=$SECONDS
  timeout -k 10 "$limit" $PY bench/gpu_parts.py run "$name" --out "$WORK/$name.json" $DRY \
    </dev/null >"$WORK/$name.log" 2>&1
  rc=$?
  echo "$name $rc $((SECONDS - began)) $limit" >>"$WORK/status.txt"
  { echo "==== $name (exit $rc, $((SECONDS - began)) s)"; cat "$WORK/$name.log"; } >>"$LOG"
  if [ -f "$WORK/$name.json" ]; then grep '^gpu_check:' "$WORK/$name.log" | tail -n 1
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then say "$name: timed out after ${limit} s"
  else say "$name: exited with status $rc"; fi
  if [ "$name" = check ] && [ "$rc" != 0 ]; then CHECK_OK=0; fi
done < <($PY bench/gpu_parts.py list 2>>"$LOG")

# ---- 4. the report
if ! $PY bench/gpu_parts.py report "$WORK" "$OUT_DIR" $DRY >>"$LOG" 2>&1; then
  say "the report could not be written (see $LOG); exit statuses: $(tr '\n' ';' <"$WORK/status.txt" 2>/dev/null)"
  printf '{"error": "report failed", "statuses": "%s"}\n' "$(tr '\n' ';' <"$WORK/status.txt" 2>/dev/null)" \
    >"$OUT_DIR/gpu-check.json"
  exit 1
fi
cat "$OUT_DIR/gpu-check.md"
say "$((SECONDS - START)) s; results in $OUT_DIR/gpu-check.json, gpu-check.md and gpu-check.log"
grep -q '"status": "failed"' "$OUT_DIR/gpu-check.json" && exit 1
exit 0
