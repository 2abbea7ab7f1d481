#!/usr/bin/env bash
# Runs on a lent GPU machine (the `device` tool of our workplace), from the repository root: several
# `python -m repro sweep` commands side by side for at most SECONDS, then packs the run records they
# finished into $OUT/runs.tgz (weights stay there: too large to bring back) and their logs into
# $OUT/logs.tgz. A sweep stopped by the time limit loses only its unfinished runs (atomic writes).
# usage: scripts/gpu_batch.sh PARAMS SECONDS "WORKERS SECTION [--only COL=VAL ...]" ...
# The machine's own python3 (its torch) is used; carry data/ (the dataset cache) with the call.
set -u
params=$1; secs=$2; shift 2
out=${OUT:-/tmp/gpu_batch_out}; logs=/tmp/gpu_batch_logs
mkdir -p "$out" "$logs"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
touch /tmp/gpu_batch_start; sleep 1
i=0
for job in "$@"; do
  i=$((i + 1))
  read -r workers rest <<< "$job"
  (REPRO_WORKERS=$workers timeout "$secs" python3 -m repro sweep $rest --params "$params" \
     > "$logs/sweep$i.log" 2>&1; echo "[$job] exit $?" >> "$logs/sweep$i.log") &
done
wait
find results -path '*/runs/*.json' -newer /tmp/gpu_batch_start > /tmp/gpu_batch_new
echo "$(wc -l < /tmp/gpu_batch_new) new run records"
tar czf "$out/runs.tgz" -T /tmp/gpu_batch_new
tar czf "$out/logs.tgz" -C "$logs" .
for f in "$logs"/*.log; do tail -c 600 "$f" | tr '\r' '\n' | tail -3; done
