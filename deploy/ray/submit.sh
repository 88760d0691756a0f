#!/usr/bin/env bash
# Submit `weakseg pseudo` to a running Ray cluster (e.g. deploy/ray/raycluster.yaml after
# `kubectl port-forward svc/weakseg-batch-head-svc 8265:8265`). The working directory uploaded is the
# code only: data, runs, outputs, virtualenvs and .git are excluded. Extra arguments go to `weakseg pseudo`.
#   RAY_DASHBOARD=http://127.0.0.1:8265 deploy/ray/submit.sh --method advcam --model /mnt/shared/runs/classifier \
#     --data /mnt/shared/VOC2012 --split train_aug --out s3://my-bucket/weakseg/pseudo/advcam-t27 --device cuda
set -euo pipefail
cd "$(dirname "$0")/../.."
exec ray job submit --address "${RAY_DASHBOARD:-http://127.0.0.1:8265}" --working-dir . \
  --runtime-env-json '{"excludes": [".git", ".venv", "data/", "runs/", "out/", "demo_out/", "benchmarks/results/cache/", "*.safetensors", "*.npz", "*.pt", "__pycache__"]}' \
  -- python -m cli.main pseudo "$@"
