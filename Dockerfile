# syntax=docker/dockerfile:1
# One image for the three competition tools (nips-attack, nips-targeted-attack, nips-defense):
# they share every dependency, and each submission's entry point picks its tool. The organisers
# run it with the submission folder mounted at /code and no network, so the image holds
# nips_adv and its dependencies, and each submission ships its own checkpoint.
#
#   CPU: docker build -t nips-adv:0.1.0 .
#   GPU: docker build --build-arg TF_VARIANT=-gpu -t nips-adv:0.1.0-gpu .
# scripts/build_submissions.sh builds both and checks their size against the 8 GiB limit.

ARG TF_VERSION=2.20.0
ARG TF_VARIANT=""

# Build the nips_adv wheel apart, so that the image gets the wheel's files and no sources.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nips_adv ./nips_adv
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM tensorflow/tensorflow:${TF_VERSION}${TF_VARIANT}
LABEL org.opencontainers.image.title="nips_adv" \
      org.opencontainers.image.description="Attacks and defense for the NIPS 2017 adversarial competition" \
      org.opencontainers.image.licenses="Apache-2.0"

# The base image's TensorFlow satisfies nips_adv's requirement and is kept; the other
# dependencies are installed now, at build time, never at run time. (PIP_BREAK_SYSTEM_PACKAGES:
# newer Ubuntu bases mark the system Python as externally managed.)
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir /wheels/*.whl \
    && nips-adv --version \
    && nips-attack --help > /dev/null \
    && nips-defense --help > /dev/null

# A fixed uid outside the host's usual range; the validator makes the output folder writable for it.
RUN groupadd --gid 10001 nips \
    && useradd --no-log-init --uid 10001 --gid 10001 --create-home --shell /bin/bash nips

# Checkpoints come from the submission folder only (the entry points pass --checkpoint too);
# Python writes no bytecode into the mounted /code and its output reaches the logs at once.
ENV NIPS_ADV_CHECKPOINTS=/code \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

USER 10001:10001
WORKDIR /code
HEALTHCHECK NONE
CMD ["nips-adv", "--help"]
