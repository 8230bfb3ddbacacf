# regstate, for docker-compose.yml: `docker compose up --build` runs the whole system.
# The image installs the package's wheel, exactly as tests/packaging/test_wheel_install.py
# does in CI, and runs `regstate <subcommand>`; every setting comes from REGSTATE_*
# (see streams/settings.py).
FROM python:3.12-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY schemas ./schemas
COPY processors ./processors
COPY streams ./streams
RUN pip wheel --no-deps -w /dist .

FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=wheel /dist /dist
# The mysql extra: a dialer view can keep its copy in MariaDB/MySQL (REGSTATE_DIALER_DSN).
RUN WHEEL=$(ls /dist/regstate-*.whl) && pip install "${WHEEL}[mysql]" \
    && rm -rf /dist \
    && useradd --system --uid 10001 --home-dir /var/lib/regstate regstate \
    && mkdir -p /var/lib/regstate \
    && chown regstate /var/lib/regstate

USER regstate
WORKDIR /var/lib/regstate
ENV REGSTATE_DATA_DIR=/var/lib/regstate \
    REGSTATE_WEB_BIND=0.0.0.0
EXPOSE 6066 6067 6068 6070 5060/udp 5060/tcp
ENTRYPOINT ["regstate"]
CMD ["worker"]
