# The postal KPI service: `kpi serve` (exporter + API) and `kpi simulate` (scenario generator).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN pip install --no-cache-dir "uv>=0.5"

WORKDIR /app
# Dependencies first, from the lock file, so code changes do not re-resolve them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY kpi ./kpi
COPY exporters ./exporters
COPY kpi_cli ./kpi_cli
# The runbooks page (/runbooks) that alerts' runbook_url points to.
COPY docs/runbooks.md ./docs/runbooks.md
# The project is installed editable: its own bytecode is compiled here, as the
# dependencies' is (UV_COMPILE_BYTECODE), so no start compiles it (PYTHONDONTWRITEBYTECODE).
RUN uv sync --frozen --no-dev && python -m compileall -q kpi exporters kpi_cli

RUN useradd --uid 10001 --no-create-home postal \
    && mkdir -p /data /state /lake \
    && chown postal:postal /data /state /lake
USER postal
VOLUME ["/data", "/state"]
EXPOSE 9108 8000

ENTRYPOINT ["kpi"]
CMD ["serve", "/data", "--exporter-listen", "0.0.0.0:9108", "--api-listen", "0.0.0.0:8000", "--state", "/state", "--as-of", "now"]
