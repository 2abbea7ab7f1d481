#!/usr/bin/env bash
# Runs on a lent GPU machine (the `device` tool of our workplace), from the repository root: several
# `python -m repro sweep` commands side by side for at most SECONDS, then packs the run records they
# finished into $OUT/runs.tgz (weights stay there: too large to bring back) and their logs into
# $OUT/logs.tgz. Unfinished runs save their state every REPRO_CHECKPOINT_S (default here 60) seconds into
# .gpu/ckpt/ (REPRO_CHECKPOINT_DIR); those checkpoints come back in $OUT/ckpt.tgz: unpack them into .gpu/ckpt
# here and carry .gpu with the next call, and its runs go on from their last saved epoch (a run longer than
# one 10-minute command finishes over several).
# usage: scripts/gpu_batch.sh PARAMS SECONDS "WORKERS SECTION [--only COL=VAL[,VAL] ...]" ...
#   (a value with spaces is quoted inside the job string: "4 ftp_quantized --only 'method=BP,FTP (output step)'")
# The machine's own python3 (its torch) is used (PY overrides it); carry data/ (the dataset cache) with the call.
set -u
params=$1; secs=$2; shift 2
out=${OUT:-/tmp/gpu_batch_out}; logs=/tmp/gpu_batch_logs
mkdir -p "$out" "$logs"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export REPRO_CHECKPOINT_DIR=$PWD/.gpu/ckpt REPRO_CHECKPOINT_S=${REPRO_CHECKPOINT_S:-60}
mkdir -p "$REPRO_CHECKPOINT_DIR"
touch /tmp/gpu_batch_start; sleep 1
i=0
for job in "$@"; do
  i=$((i + 1))
  read -r workers rest <<< "$job"
  eval "args=($rest)"  # the job string's own quoting holds: --only 'method=BP,FTP (output step)'
  (REPRO_WORKERS=$workers timeout "$secs" "${PY:-python3}" -m repro sweep "${args[@]}" --params "$params" \
     > "$logs/sweep$i.log" 2>&1; echo "[$job] exit $?" >> "$logs/sweep$i.log") &
done
wait
find results -path '*/runs/*.json' -newer /tmp/gpu_batch_start > /tmp/gpu_batch_new
echo "$(wc -l < /tmp/gpu_batch_new) new run records"
tar czf "$out/runs.tgz" -T /tmp/gpu_batch_new
tar czf "$out/logs.tgz" -C "$logs" .
# unfinished runs' state (finished runs delete theirs), smallest first, as many as fit in 56 MiB (64 come back)
(cd "$REPRO_CHECKPOINT_DIR" && ls -Sr -- *.ckpt 2>/dev/null | awk -v cap=$((56 * 1024 * 1024)) \
   '{ cmd = "stat -c %s " $0; cmd | getline sz; close(cmd); if (tot + sz <= cap) { tot += sz; print } }' \
   > /tmp/gpu_batch_ckpts)
tar czf "$out/ckpt.tgz" -C "$REPRO_CHECKPOINT_DIR" -T /tmp/gpu_batch_ckpts
echo "checkpoints of unfinished runs: $(find "$REPRO_CHECKPOINT_DIR" -name '*.ckpt' | wc -l), brought back: $(wc -l < /tmp/gpu_batch_ckpts)"
for f in "$logs"/*.log; do tail -c 600 "$f" | tr '\r' '\n' | tail -3; done
