#!/usr/bin/env bash
# The device calls that measured LightLLM serving and training_bench's fast paths on one H200, one call each,
# made back to back on one warm machine (results/README.md lists them as made):
#
#   bash benchmarks/h200_lightllm_training_calls.sh lightllm   # carry .stage-lightllm (27 wheels, 25 MB)
#   bash benchmarks/h200_lightllm_training_calls.sh train8     # carry .stage-train (liger, torchao, megatron-core,
#   bash benchmarks/h200_lightllm_training_calls.sh trainfull  #   bitsandbytes: 48 MB); each call reinstalls them
#   bash benchmarks/h200_lightllm_training_calls.sh finetune
#   bash benchmarks/h200_lightllm_training_calls.sh loradtype  # carry .stage-train
#
# .stage-lightllm: `loadgen engine-wheels` of LightLLM fc72ffab (README, engine-wheels); .stage-train: the
# training wheels (README, training_bench fast paths). Everything a call measures is written under $OUT as it
# arrives (the sweeps rewrite their JSON after every point), so a call cut off at its limit keeps what finished.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out-local}
mkdir -p "$OUT"
install() {  # wheels folder, target
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/*.whl
}
TRAIN=(--model 7b --method full --seq-len 2048 --micro-batch 4 --steps 6 --warmup 3)

case $1 in
  lightllm)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    df -h /dev/shm /tmp | tail -2
    install .stage-lightllm /tmp/site-lightllm || exit 1
    python3 -m loadgen make-model --model 7b --weights random --output /tmp/models/7b || exit 1
    # the H200 vLLM workload (results/h200-vllm-protocol-a.json): Llama-2-7B shape, 512 in / 128 out, 4,096-token
    # context, at most 256 sequences and 8,192 batched tokens per step, prompts sized with the model directory's
    # tokenizer (the default since attempt 3, which sized them in words: ~950 tokens each), each point its own prompt
    # text (since attempt 4, whose points repeated the first one's prompts into the prefix cache); Poisson at the rates vLLM was
    # measured at, closed loops of 1, 8 and 32 users; one launch of LightLLM for all points
    timeout -s INT -k 20 480 python3 -m loadgen sweep --backend lightllm --model /tmp/models/7b \
      --engine-path /tmp/site-lightllm --input-len 512 --output-len 128 --max-context 4096 \
      --engine-arg=--running_max_req_size=256 --engine-arg=--batch_max_tokens=8192 --engine-arg=--mem_fraction=0.75 --startup-timeout 4m \
      --qps 10,20,32,38 --concurrency 1,8,32 --duration 30 --warmup 8 --slo ttft:500ms,tpot:50ms \
      --scrape-interval 1s --gpu-telemetry --output /tmp/runs/lightllm
    echo "sweep exit $?"
    cp /tmp/runs/lightllm/sweep.json "$OUT/h200-lightllm-sweep.json" 2>/dev/null
    tar czf "$OUT/h200-lightllm-runs.tgz" -C /tmp/runs lightllm ;;
  train8)
    install .stage-train /tmp/site-train || exit 1
    export PYTHONPATH=/tmp/site-train
    python3 -c "import liger_kernel, torchao, megatron.core, bitsandbytes, torch, transformers as t; print('torch', torch.__version__, 'torchao', torchao.__version__, 'megatron-core', megatron.core.__version__, 'bitsandbytes', bitsandbytes.__version__, 'transformers', t.__version__)"
    python3 -m training_bench sweep "${TRAIN[@]}" --layers 8 --timeout 150 \
      --vary kernels=none,liger --vary compile=off,on --point precision=fp8,compile=on \
      --point engine=megatron --output "$OUT/h200-training-7b-8l.json" ;;
  trainfull)
    install .stage-train /tmp/site-train || exit 1
    export PYTHONPATH=/tmp/site-train
    cp "${2:-results/h200-training-7b-8l.json}" /tmp/like.json
    python3 -m training_bench sweep "${TRAIN[@]}" --timeout 170 --like /tmp/like.json \
      --point kernels=none,compile=off --point precision=bf16 --point precision=fp8 --point engine=megatron \
      --output "$OUT/h200-training-7b-full.json" ;;
  finetune)
    install .stage-train /tmp/site-train || exit 1
    export PYTHONPATH=/tmp/site-train
    cp "${2:-results/h200-training-7b-8l.json}" /tmp/like.json
    timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_training_fast_paths.py 2>&1 | tail -15
    python3 -m training_bench sweep "${TRAIN[@]}" --timeout 170 --like /tmp/like.json \
      --point method=lora --point method=qlora --point method=qlora,compile=off \
      --output "$OUT/h200-training-7b-finetune.json" ;;
  loradtype)
    # PEFT upcasts the adapters of a bf16 base to fp32 (autocast_adapter_dtype): LoRA ran slower per step than
    # full training (699 vs 595 ms). The same LoRA/QLoRA runs with the adapters left in bf16:
    install .stage-train /tmp/site-train || exit 1
    export PYTHONPATH=/tmp/site-train
    cp "${2:-results/h200-training-7b-8l.json}" /tmp/like.json
    python3 -m training_bench sweep "${TRAIN[@]}" --timeout 170 --like /tmp/like.json \
      --point method=lora,lora_dtype=bf16 --point method=lora,lora_dtype=fp32 --point method=qlora,lora_dtype=bf16 \
      --output "$OUT/h200-training-7b-lora-dtype.json" ;;
esac
