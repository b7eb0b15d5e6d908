# One image for the three competition tools (nips-attack, nips-targeted-attack, nips-defense):
# they share every dependency, and each submission's entry point picks its tool. The organisers
# run it with the submission folder mounted at /code and no network, so the image holds
# nips_adv, its dependencies and the converted EfficientNet-Lite weights; each packaged
# submission ships its own checkpoint.
#
# Build it with `make images` (scripts/build_images.sh): it uses the official bases below when
# Docker Hub answers, and local stand-in bases (made with debootstrap) when it does not. By hand:
#   CPU: docker build -t nips-adv:0.1.0 .
#   GPU: docker build --build-arg TF_BASE=tensorflow/tensorflow:2.20.0-gpu -t nips-adv:0.1.0-gpu .
# No BuildKit-only syntax: the classic builder and BuildKit both build it.

ARG PYTHON_BASE=python:3.11-slim
ARG TF_BASE=tensorflow/tensorflow:2.20.0

# Build the nips_adv wheel apart, so that the image gets the wheel's files and no sources.
FROM ${PYTHON_BASE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nips_adv ./nips_adv
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${TF_BASE}
LABEL org.opencontainers.image.title="nips_adv" \
      org.opencontainers.image.description="Attacks and defense for the NIPS 2017 adversarial competition" \
      org.opencontainers.image.licenses="Apache-2.0"

# The base image's TensorFlow satisfies nips_adv's requirement and is kept; the other
# dependencies are installed now, at build time, never at run time. (PIP_BREAK_SYSTEM_PACKAGES:
# newer Debian and Ubuntu bases mark the system Python as externally managed.)
# XDG_CACHE_HOME: the EfficientNet-Lite weights are converted once here, into the image,
# so that no container run converts them again (the cache is read-only for the run's user).
ENV XDG_CACHE_HOME=/opt/nips_adv/cache \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=wheel /wheels /tmp/wheels
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && nips-adv --version \
    && nips-attack --help > /dev/null \
    && nips-defense --help > /dev/null \
    && python3 -c "from nips_adv.models.catalogue import prepare_lite_weights; prepare_lite_weights()" \
    && chmod -R a+rX /opt/nips_adv

# A fixed uid outside the host's usual range; the validator makes the output folder writable for it.
RUN groupadd --gid 10001 nips \
    && useradd --no-log-init --uid 10001 --gid 10001 --create-home --shell /bin/bash nips

# Checkpoints come from the submission folder only (the entry points pass --checkpoint too);
# Python writes no bytecode into the mounted /code and its output reaches the logs at once.
# TF_CPP_MIN_LOG_LEVEL=3 keeps TensorFlow's C++ start-up warnings out of the run's logs.
ENV NIPS_ADV_CHECKPOINTS=/code \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=3

USER 10001:10001
WORKDIR /code
HEALTHCHECK NONE
CMD ["nips-adv", "--help"]
