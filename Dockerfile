# syntax=docker/dockerfile:1
# outbox-relay and outbox-sink on Debian 12, every library from Debian's packages.
#   docker build -t outbox-relay:0.1.0 .
#   docker run --rm -v $PWD/relay.toml:/etc/outbox-relay/relay.toml:ro outbox-relay:0.1.0 --config /etc/outbox-relay/relay.toml
# The package lists are not repeated here: both stages read scripts/packages.txt, the list scripts/setup
# installs from (the build stage its untagged lines, the runtime stage the lines tagged [runtime]).
# helm/tests/run checks that this stays so, that the runtime packages exist in Debian 12 and that they cover
# every shared library the binaries load.

FROM debian:12 AS build
ARG DEBIAN_FRONTEND=noninteractive
COPY scripts/packages.txt /tmp/packages.txt
RUN apt-get update \
 && grep -v '^[[:space:]]*#' /tmp/packages.txt | grep -v '\[runtime\]' | awk 'NF {print $1}' \
    | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the CMake project (its add_subdirectory() directories) and what the unit tests read, so local build
# trees stay out of the image.
COPY CMakeLists.txt ./
COPY common common
COPY relay relay
COPY sinks sinks
COPY tests tests
COPY examples examples
COPY schema schema
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && ninja -C /build outbox-relay outbox-sink unit_tests \
 && ctest --test-dir /build -L unit --output-on-failure \
 && strip --strip-debug /build/bin/outbox-relay /build/bin/outbox-sink

FROM debian:12
ARG DEBIAN_FRONTEND=noninteractive
COPY scripts/packages.txt /tmp/packages.txt
RUN apt-get update \
 && grep -v '^[[:space:]]*#' /tmp/packages.txt | grep '\[runtime\]' | awk 'NF {print $1}' \
    | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt \
 && groupadd --system --gid 10001 outbox \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin outbox
COPY --from=build /build/bin/outbox-relay /build/bin/outbox-sink /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/outbox-relay"]
CMD ["--help"]
