# A stand-in for the eclipse-mosquitto:2 image where no image registry is reachable:
# Debian's mosquitto package on a local Debian base, laid out like the official image
# (config /mosquitto/config/mosquitto.conf, persistence /mosquitto/data, user mosquitto).
#
#   docker build -f docker/mosquitto.Dockerfile --build-arg BASE_IMAGE=$(scripts/debian-base.sh amd64) \
#     -t tidegate-mosquitto:2 docker/
#   TIDEGATE_MOSQUITTO_IMAGE=tidegate-mosquitto:2 docker compose -f docker/compose.yaml up -d
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
    && chown -R mosquitto:mosquitto /mosquitto/data /mosquitto/log
COPY mosquitto.conf /mosquitto/config/mosquitto.conf
EXPOSE 1883
USER mosquitto
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
