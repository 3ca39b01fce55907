#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go, with what they print kept under OUT_DIR:
#   1. the binary autoencoder in torch on the GPU: fit 50,000 x 2,048 at L = 48 (bench_hashing.py,
#      synthetic features, three seeds, after an untimed warm-up fit);
#   2. config/mnist.yaml end to end (MNIST and Fashion-MNIST, three seeds: fine-tuning, SSDH and
#      feature extraction on the GPU, the hashers on the CPU), wall-clock timed, stopped after
#      BUDGET seconds (default 420; rerun to continue: finished jobs are kept);
#   3. that run's results.tsv, provenance.json, figures 5 and 6 and job logs (logs.tgz) copied to OUT_DIR.
# Run it from the project root inside the project's environment, with the datasets where
# config/mnist.yaml says:  uv run bash benchmarks/gpu_checks.sh /tmp/gpu-checks
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-420}
mkdir -p "$out"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))" || exit 1

echo "== BA on the GPU: 50,000 x 2,048, L = 48"
python3 benchmarks/bench_hashing.py --methods ba --ba-variants ba-cuda --warmup --bits 48 --n-train 50000 --seeds 0 1 2 | tee "$out/bench_hashing_cuda.md"

echo "== config/mnist.yaml, at most $budget s"
start=$(date +%s)
timeout "$budget" python3 -m snakemake --cores all --configfile config/mnist.yaml --keep-going --rerun-incomplete >"$out/snakemake_mnist.log" 2>&1
rc=$?
echo "snakemake exit $rc after $(($(date +%s) - start)) s ($(grep -c 'Finished job' "$out/snakemake_mnist.log") jobs finished this call; 124 = stopped at the budget)"
tail -n 3 "$out/snakemake_mnist.log"
for f in results.tsv provenance.json fig6_precision_recall.png fig5_ba_objective.png; do
    [ -f "results/report/mnist/$f" ] && cp "results/report/mnist/$f" "$out/"
done
tar czf "$out/logs.tgz" results/logs
exit $rc
