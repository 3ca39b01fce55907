#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go, with what they print kept under OUT_DIR:
#   1. config/mnist.yaml end to end (MNIST and Fashion-MNIST, three seeds: fine-tuning, SSDH and
#      feature extraction on the GPU, the hashers on the CPU), wall-clock timed and stopped after
#      BUDGET seconds (default 420; run again to go on: finished jobs are kept). Its results.tsv,
#      provenance.json, figures 5 and 6 (when the run got to its report), every evaluation summary
#      (summaries.tgz, also of an unfinished run) and the job logs (logs.tgz) go to OUT_DIR;
#   2. the binary autoencoder in torch on the GPU: fit 50,000 x 2,048 at L = 48 (bench_hashing.py,
#      synthetic features, three seeds, after an untimed warm-up fit; about 3 minutes in all, most
#      of it the CPU's evaluation of 1,000 queries against 50,000 items). Skipped with SKIP_BA=1.
# Run it from the project root inside the project's environment, with the datasets where
# config/mnist.yaml says:  uv run bash benchmarks/gpu_checks.sh /tmp/gpu-checks
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-420}
mkdir -p "$out"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))" || exit 1

echo "== config/mnist.yaml, at most $budget s"
start=$(date +%s)
# SIGTERM at the budget lets snakemake mark the running jobs incomplete; SIGKILL 30 s later at most.
timeout -k 30 "$budget" python3 -m snakemake --cores all --configfile config/mnist.yaml --keep-going --rerun-incomplete >"$out/snakemake_mnist.log" 2>&1
rc=$?
echo "snakemake exit $rc after $(($(date +%s) - start)) s ($(grep -c 'Finished job' "$out/snakemake_mnist.log") jobs finished; 124 or 137 = stopped at the budget)"
tail -n 3 "$out/snakemake_mnist.log"
[ "$rc" -eq 0 ] || python3 -m snakemake --unlock --configfile config/mnist.yaml >/dev/null 2>&1
for f in results.tsv provenance.json fig6_precision_recall.png fig5_ba_objective.png; do
    [ -f "results/report/mnist/$f" ] && cp "results/report/mnist/$f" "$out/"
done
find results -name summary.parquet | tar czf "$out/summaries.tgz" -T -
tar czf "$out/logs.tgz" results/logs

if [ "${SKIP_BA:-0}" != 1 ]; then
    echo "== BA on the GPU: 50,000 x 2,048, L = 48"
    python3 benchmarks/bench_hashing.py --methods ba --ba-variants ba-cuda --warmup --bits 48 --n-train 50000 --seeds 0 1 2 | tee "$out/bench_hashing_cuda.md"
fi
exit $rc
