#!/usr/bin/env bash
# One big model served by vLLM across nodes (Ray), several replicas behind one run.
set -euo pipefail

# On each replica's head node (a Ray cluster of two 8-GPU nodes, started with `ray start`):
#   vllm serve Qwen/Qwen2.5-VL-72B-Instruct --tensor-parallel-size 8 \
#     --pipeline-parallel-size 2 --distributed-executor-backend ray --port 8000

# The run sends each request to the replica with the fewest in flight; a replica that fails is
# set aside for a while and its requests go to the others.
pytest suites \
  --mtmcs-model=openai:Qwen/Qwen2.5-VL-72B-Instruct \
  --mtmcs-base-url=http://replica-1:8000/v1,http://replica-2:8000/v1 \
  --mtmcs-concurrency=64 \
  --mtmcs-baseline=qwen2-vl-72b-instruct \
  --mtmcs-report=report
