# nself-realtime in a container: built in one stage, run as an unprivileged user in a small one.
#   docker build -t nself-realtime .
#   docker run -p 3101:3101 -e REALTIME_JWT_SECRET=... -e DATABASE_URL=postgres://... nself-realtime
# Several nodes behind a load balancer: deploy/compose.cluster.yml (README, "Running several nodes").

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p nself-realtime \
 && cp target/release/nself-realtime /usr/local/bin/nself-realtime

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/nself-realtime --create-home realtime
COPY --from=build /usr/local/bin/nself-realtime /usr/local/bin/nself-realtime
USER realtime
WORKDIR /var/lib/nself-realtime
ENV REALTIME_HOST=0.0.0.0 \
    REALTIME_PORT=3101 \
    REALTIME_DATA_DIR=/var/lib/nself-realtime \
    LOG_FORMAT=json
EXPOSE 3101
# 200 while the database answers (also while Redis is away: "degraded" still serves its own sockets).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${REALTIME_PORT}/health" > /dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["nself-realtime"]
CMD ["server", "run"]
