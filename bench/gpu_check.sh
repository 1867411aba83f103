#!/usr/bin/env bash
# The GPU checks, in one call (under 10 minutes) on a machine with a GPU, from a bare checkout plus .gpu/
# (bench/gpu_prepare.sh), most important first:
#   env     the GPU, torch and CUDA as the run sees them
#   data    the small state, visual (rendered with EGL) and robot datasets of the train.py rows
#   train   short real train.py runs, state and visual: the compiled default (CUDA graphs), then --no-compile
#   resume  bench/resume_check.py on CUDA: a resumed compiled run ends bit-identical to a straight one
#   speed   bench/speed.py on CUDA: the update (state, visual, robot; eager, compiled TF32 = the default, bf16),
#           train.py end to end, one chunk at batch 1 (rows are kept as they come, if the limit cuts it short)
#   jax     the JAX reference's update and chunk beside it (if jax and .gpu/ref are there)
#   learn   (not in the default parts: about 9 minutes on its own) a small visual-cube-single dataset rendered on
#           the GPU, LPS against flow BC at equal steps through tools/sweep.py and tools/report.py
# Each part runs under its own time limit (LIMIT_<PART>=seconds; they add up to 580 s), so one failure or hang
# does not eat the rest.
# It writes one log and one table: OUTDIR/gpu_check.log, OUTDIR/gpu_check.md.
#
#   bash bench/gpu_check.sh [OUTDIR]            # OUTDIR: default $OUT, else bench/results/gpu-check
#   PARTS=env,data,learn bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results/gpu-check}}
mkdir -p "$out"
log=$out/gpu_check.log
table=$out/gpu_check.md
work=$(mktemp -d)
parts=${PARTS:-env,data,speed,jax,train,resume}
python=${PYTHON:-python3}
device=${DEVICE:-cuda}  # DEVICE=cpu tries the script itself on a machine without a GPU
export MUJOCO_GL=egl PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$work/inductor-cache
: > "$log"

if [ -d .gpu/wheels ] && "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then  # what the image lacks, unpacked (no pip needed: nothing can be fetched there)
  "$python" -c "import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in glob.glob('.gpu/wheels/*.whl')]" \
    "$work/site" && export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
fi

{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| part | status | seconds |"
  echo "| --- | --- | --- |"
} > "$table"

# part NAME DEFAULT_LIMIT COMMAND...: run it under its limit, its output into the log, a row into the table.
part() {
  local name=$1 limit_var="LIMIT_${1^^}" limit=$2
  shift 2
  limit=${!limit_var:-$limit}
  case ",$parts," in *",$name,"*) ;; *) return 0 ;; esac
  echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS status
  if declare -F "$1" > /dev/null; then  # one of the functions below, run by a shell that timeout can stop
    timeout -k 15 "$limit" bash -c '"$@"' _ "$@" > "$work/$name.out" 2>&1
  else
    timeout -k 15 "$limit" "$@" > "$work/$name.out" 2>&1
  fi
  local rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timed out" ;;
    3) status="skipped: $(tail -n 1 "$work/$name.out")" ;;
    *) status="failed (exit $rc)" ;;
  esac
  cat "$work/$name.out" >> "$log"
  echo "| $name | $status | $((SECONDS - start)) |" >> "$table"
  echo "=== $name: $status in $((SECONDS - start)) s" | tee -a "$log"
}

env_report() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0))"
  "$python" -c "import ogbench, kornia, mujoco; print('ogbench', ogbench.__version__, 'mujoco', mujoco.__version__)"
}

jax_reference() {
  [ -f .gpu/ref/jax_reference_speed.py ] || { echo "no .gpu/ref (bench/gpu_prepare.sh LPS_REPO makes it)"; return 3; }
  "$python" -c "import jax; print('jax', jax.__version__, jax.devices())" || return 3
  local ref=$PWD/.gpu/ref
  (cd "$ref/lps" && "$python" "$ref/jax_reference_speed.py" . --steps 200 \
    && "$python" "$ref/jax_reference_speed.py" . --steps 300 --scan 10 \
    && "$python" "$ref/jax_reference_speed.py" . --visual --steps 100 \
    && "$python" "$ref/jax_reference_speed.py" . --steps 0)
}

short_runs() {  # the compiled default, then --no-compile, on states and on pixels
  local data=data/bench-speed failed=0
  for task in cube-single visual-cube; do
    for how in "" --no-compile; do
      "$python" train.py --task "$task" --dataset-dir "$data" --out "$work/runs/$task$how" --steps 200 \
        --log-every 100 --eval-every 200 --eval-episodes 1 --save-every 200 --no-progress $how \
        || { echo "train.py --task $task $how failed"; failed=1; }
    done
  done
  return $failed
}

learn() {  # LPS against flow BC from pixels, equal steps, 2 seeds
  "$python" tools/generate_ogbench.py --env visual-cube-single-play-v0 --episodes 100 --seed 0 --workers 16 \
    --out "$work/ogbench" || return 1
  "$python" tools/sweep.py --tasks visual-cube --agents lps,flow-bc --seeds 0,1 --steps 20000 \
    --out "$work/learn" --runs-per-gpu 4 -- --dataset-dir "$work/ogbench" --eval-every 5000 --eval-episodes 20 \
    --no-progress || return 1
  "$python" tools/report.py "$work/learn" && cat "$work/learn/report/results.md"
}

export -f env_report jax_reference short_runs learn
export python device work
part env 20 env_report
part data 100 "$python" bench/speed.py --device "$device" --parts data
part train 120 short_runs
part resume 100 "$python" bench/resume_check.py --steps 20 -- --task cube-single --dataset-dir data/bench-speed
part speed 180 "$python" bench/speed.py --device "$device" --parts update,train,act --steps 200 --train-steps 1000 \
  --act-calls 300 --variants "eager fp32,compiled tf32,compiled bf16"
part jax 60 jax_reference
part learn 540 learn

{
  echo
  echo "## Tables"
  if [ -f "$work/speed.out" ]; then
    printf '%s\n' "| work | agent | variant | result | first calls (s) |" "| --- | --- | --- | --- | --- |"
    grep -h -E '^\| (update|train.py|act) ' "$work/speed.out"
  fi
  grep -h -E 'steps/s|ms' "$work"/jax.out 2>/dev/null | sed 's/^/    JAX reference: /'
  grep -h -E 'compiled in|compiling .* failed|update:' "$work"/train.out 2>/dev/null | sort | uniq -c | sed 's/^/    train.py: /'
  grep -h 'resume is' "$work"/resume.out 2>/dev/null
  grep -h '^|' "$work"/learn.out 2>/dev/null
} >> "$table"
cat "$table"
rm -rf "$work"
