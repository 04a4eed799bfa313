# volfs in a container: `volfs run` mounts volumes, runs the command, commits and unmounts.
#   docker build -t volfs .
#   docker run --rm --device /dev/fuse --cap-add SYS_ADMIN -v volfs-store:/var/lib/volfs \
#       volfs -v data:/data -- COMMAND ARGS...
# (README.md, "Containers".) pyfuse3 is compiled against libfuse3 in a build stage, so the
# image carries only the runtime library and the fusermount3 helper, no compiler.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libfuse3-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY volfs ./volfs
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[distributed]'

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
# The wheels were built from this checkout one stage up: what to pin is already chosen.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links /wheels 'volfs[distributed]' \
    && rm -rf /wheels
ENV VOLFS_STORE=/var/lib/volfs
VOLUME ["/var/lib/volfs"]
ENTRYPOINT ["volfs", "run"]
CMD ["--help"]
