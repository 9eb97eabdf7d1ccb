# One image for every jewelcut service (worker, producer, beat, flower, migrate, tests).
# PyPI's torch 2.14.1 for Linux x86_64 is a CUDA build: the same image runs on a GPU host.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# redis-server: the fault tests start (and restart) a private Redis of their own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 jewelcut \
    && install -d -o jewelcut -g jewelcut /home/jewelcut/data  # named volumes inherit this owner

WORKDIR /app
# torch first, pinned, so the project's install does not pick another build.
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY --chown=jewelcut:jewelcut . /app
# Editable: migrations/ and the shipped models/ are found next to the code.
RUN pip install -e '.[all]' && chown jewelcut:jewelcut /app

USER jewelcut
ENV JEWELCUT_DATA_DIR=/home/jewelcut/data
# On the model-cache volume: weights and ONNX exports survive a new container.
ENV JEWELCUT_MODEL_CACHE_DIR=/home/jewelcut/data/model-cache
CMD ["jewelcut", "--help"]
