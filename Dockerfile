# regstate, for docker-compose.yml: `docker compose up --build` runs Kafka and two workers.
# The image installs the package (pip install .) and runs `regstate <subcommand>`;
# every setting comes from REGSTATE_* (see streams/settings.py).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# README.m[d]: copied when present (pyproject names it as the long description).
COPY pyproject.toml README.m[d] ./
COPY schemas ./schemas
COPY processors ./processors
COPY streams ./streams
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/regstate regstate \
    && mkdir -p /var/lib/regstate \
    && chown regstate /var/lib/regstate

USER regstate
WORKDIR /var/lib/regstate
ENV REGSTATE_DATA_DIR=/var/lib/regstate \
    REGSTATE_WEB_BIND=0.0.0.0
EXPOSE 6066 6067 6068 5060/udp 5060/tcp
ENTRYPOINT ["regstate"]
CMD ["worker"]
