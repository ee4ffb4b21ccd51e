#!/usr/bin/env bash
# One big model served by vLLM across nodes (Ray), several replicas behind one run. Run from a
# checkout of the repository holding suites/ and baselines/; adapt the model, the replicas' URLs
# and the baseline. The machine running this needs no GPU: the model runs on the replicas.
set -euo pipefail

MODEL=Qwen/Qwen2.5-VL-72B-Instruct
REPLICAS=http://replica-1:8000/v1,http://replica-2:8000/v1
BASELINE=qwen2-vl-72b-instruct

# On each replica's head node (a Ray cluster of two 8-GPU nodes, started with `ray start`; see
# docs/serving.md):
#   vllm serve Qwen/Qwen2.5-VL-72B-Instruct --tensor-parallel-size 8 \
#     --pipeline-parallel-size 2 --distributed-executor-backend ray \
#     --limit-mm-per-prompt '{"image": 1}' --max-model-len 16384 --port 8000

# torch first and pinned, as the README says (the plugin imports it; an unpinned one pulls a
# multi-GB build).
pip install torch==2.14.1 torchvision==0.29.1
pip install -e .

# The run sends each request to the replica with the fewest in flight; a replica that fails is
# set aside for a while and its requests go to the others. The response cache keeps every reply
# between runs (a re-run generates only what it lacks); the API key, if the servers want one, is
# read from OPENAI_API_KEY. Exit 1 when a bucket regresses against the baseline.
pytest suites \
  --mtmcs-model=openai:$MODEL \
  --mtmcs-base-url=$REPLICAS \
  --mtmcs-concurrency=64 \
  --mtmcs-baseline=$BASELINE \
  --mtmcs-cache=.mtmcs-cache/responses.sqlite \
  --mtmcs-report=report \
  --junitxml=report/junit.xml
