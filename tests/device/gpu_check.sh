#!/usr/bin/env bash
# The device check for the training engine, run once on a GPU machine that has torch only:
#   PYTHONPATH=include OUT=/tmp/out bash tests/device/gpu_check.sh
# 1) bench pipeline on cuda (NCCL across GPUs when there are >= K, else the single-GPU figures);
# 2) a DDP training job through torchrun on NCCL with a checkpoint, then a resume from it;
# 3) bench pipeline on the machine's CPUs (gloo, one thread per process) if numpy is there
#    (torch's object collectives and pipeline shape inference need it).
set -u
export PYTHONPATH=${PYTHONPATH:-include}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(),
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], flush=True)
PY
python -c "import numpy" 2>/dev/null && HAVE_NUMPY=1 || HAVE_NUMPY=0
echo "numpy available: $HAVE_NUMPY"
echo "=== 1. bench pipeline --device cuda"
timeout 120 python -m mlsys.bench.pipeline --device cuda --stages 2 --microbatches 8 --batch 8192 --width 4096 \
  --layers 8 --steps 10 --warmup 3 2>&1 | tee "$OUT/bench_cuda.txt" | tail -3
echo "=== 2. DDP job on NCCL: 1 GPU, checkpoint, resume"
W="$OUT/job"; mkdir -p "$W"
python - "$W" <<'PY'
import json, sys, torch
from pathlib import Path
from mlsys.model.featurizer import HashingFeaturizer
from mlsys.training.parallel.job import JobConfig
w = Path(sys.argv[1])
texts = [f"comment {i} {'check out my channel' if i % 3 == 0 else 'love this song'}" for i in range(256)]
ids, bag = HashingFeaturizer(num_buckets=4096).encode_padded(texts)
torch.save({"ids": ids, "bag": bag, "proba": torch.softmax(torch.randn(256, 2), 1), "weight": torch.rand(256)}, w / "data.pt")
n = max(1, torch.cuda.device_count())
cfg = JobConfig(model={"num_buckets": 4096, "dim": 64, "depth": 2}, strategy="ddp", nproc=n, epochs=2, batch_size=32,
                log_every=4, device="cuda", checkpoint_uri=str(w / "ckpt"), checkpoint_every=8)
(w / "job.json").write_text(json.dumps(cfg.to_json()))
PY
NPROC=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
for attempt in first resume; do
  echo "--- $attempt"
  timeout 90 python -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m mlsys.training.parallel.job "$W" 2>&1 | grep -E "MLSYS_EVENT|Error|error" | tail -3
done
python -c "import json,sys; print('result', json.load(open(sys.argv[1]))['final_loss'])" "$W/result.json"
echo "=== 3. bench pipeline on CPUs (gloo)"
if [ "$HAVE_NUMPY" = 1 ]; then
  timeout 150 python -m mlsys.bench.pipeline --device cpu --steps 5 --warmup 2 --timeline "$OUT/cpu_timeline.json" 2>&1 \
    | tee "$OUT/bench_cpu.txt" | tail -9
else
  echo "skipped: no numpy"
fi
