# Finer-CAM Studio: the web app as a container, for dedicated hardware (your server, or a
# Hugging Face Space switched to the "docker" SDK with app_port 7860; the README's front matter
# is the Gradio SDK, which ZeroGPU requires).
#
#   docker build -t finercam-studio .                                     # CUDA torch from PyPI
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t finercam-studio .
#   docker build --build-arg PREFETCH=1 -t finercam-studio .              # bake Hub weights in
#   docker run --rm -p 7860:7860 finercam-studio                          # add --gpus all for CUDA
#
# Without PREFETCH the Hub models download on first use into HF_HOME (mount a volume there to
# keep them); with no network at all, run with -e FINERCAM_OFFLINE=1 (shipped demo models).
FROM python:3.11-slim

# Wheel index for torch/torchvision only (empty = PyPI, whose Linux wheels bundle CUDA).
ARG TORCH_INDEX_URL=""
# 1 = download the Hub/torchvision weights at build time (python -m app.models.prefetch).
ARG PREFETCH=0
# Models to prefetch (comma-separated registry names; empty = every Hub model).
ARG PREFETCH_MODELS=""

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    TORCH_HOME=/home/user/.cache/torch \
    GRADIO_ANALYTICS_ENABLED=False \
    MALLOC_ARENA_MAX=2 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    FINERCAM_HOST=0.0.0.0 \
    FINERCAM_PORT=7860

# opencv (a pytorch-grad-cam dependency) needs libGL and glib even headless.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 user

WORKDIR /home/user/app

COPY requirements.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" $(grep -E '^(torch|torchvision)==' requirements.txt); \
    fi \
    && pip install -r requirements.txt

USER user
COPY --chown=user:user . .

RUN if [ "$PREFETCH" = "1" ]; then \
        python -m app.models.prefetch ${PREFETCH_MODELS:+--models $(echo "$PREFETCH_MODELS" | tr ',' ' ')}; \
    fi

EXPOSE 7860
# python is PID 1 and handles SIGTERM itself (app.ui.serving): it stops taking new requests,
# finishes those in flight within FINERCAM_STOP_GRACE (8 s, inside Docker's 10 s default) and
# exits 0, so `docker stop` never has to SIGKILL it.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:7860/health', timeout=4)"
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "7860"]
