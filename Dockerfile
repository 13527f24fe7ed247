# The project's image: the CLI with all Python dependencies (simulator, workers, sinks).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY sinks ./sinks
RUN pip install --no-cache-dir . \
 && useradd --uid 10001 --create-home app \
 && mkdir -p /var/lib/jamsostek && chown app /var/lib/jamsostek
USER 10001
ENV STATE_DIR=/var/lib/jamsostek
ENTRYPOINT ["jamsostek"]
