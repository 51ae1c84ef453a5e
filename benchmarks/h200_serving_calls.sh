#!/usr/bin/env bash
# The H200 serving measurement as the device calls that made it: each call runs one or more of
# `bash benchmarks/h200_serving_calls.sh 1..6 | serve CFG MODEL | measure CFG MODEL STEPS [--stop-server] |
# collect CFG` on the lent machine (results/README.md lists the calls as they were made), one right after the
# other (files under /tmp and a server started in its own session survive between calls only while the machine
# stays warm, about 30 s). Calls 1-5 carry .stage1 ... .stage5 (vLLM 0.22.0 split into 55 MiB parts, the 83 wheels
# it needs that the image lacks -- a hand-made list outside the repository, of which `loadgen engine-wheels
# vllm==0.22.0 --have PIP-FREEZE` resolves a superset (results/README.md) -- and the model directories from
# `loadgen make-model`); call 6 carries
# .stage6, reassembles and installs them, and starts measuring. Results: $OUT/h200-vllm-protocol-X.json (the
# protocol JSON, cumulative) and $OUT/h200-X-runs.tgz (every point's run directory, the step trace, server.log).
set -uo pipefail
N=$1
STAGE=/tmp/stage SITE=/tmp/site RUNS=/tmp/out
export PYTHONPATH=$SITE PYTHONUNBUFFERED=1
P="python3 benchmarks/serving_protocol.py --engine-path $SITE --step-trace"

serve() {  # config, model: start its server detached, print the URL
  $P --config "$1" --model-dir "$STAGE/models/$2" --out "$RUNS/$1" --serve-detached | tail -1
}
measure() {  # config, model, steps [--stop-server]
  local url
  url=$(python3 -c "import json;print(json.load(open('$RUNS/$1/serving-protocol.json'))['server']['url'])")
  $P --config "$1" --model-dir "$STAGE/models/$2" --out "$RUNS/$1" --url "$url" --steps "$3" "${@:4}"
}
collect() {  # config: what comes back
  cp "$RUNS/$1/serving-protocol.json" "$OUT/h200-vllm-protocol-$1.json"
  tar czf "$OUT/h200-$1-runs.tgz" -C "$RUNS" "$1"
}

case $N in
  1|2|3|4|5)
    mkdir -p $STAGE && cp -r .stage$N/* $STAGE/ && du -sh $STAGE && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ;;
  6)
    cp -r .stage6/* $STAGE/ && cd $STAGE && cat vllm.whl.part.* > vllm-0.22.0-cp38-abi3-manylinux_2_28_x86_64.whl \
      && rm vllm.whl.part.* && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE ./*.whl \
      && cd - >/dev/null || exit 1
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
    nvidia-smi > "$OUT/h200-nvidia-smi.txt"; python3 -m pip freeze > "$OUT/h200-pip-freeze.txt" 2>/dev/null ;;
  serve) serve "$2" "$3" ;;
  measure) measure "${@:2}" ;;
  collect) collect "$2" ;;
esac
