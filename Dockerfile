# One image for both production processes: `lookalike worker` and `lookalike api`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# CPU build of torch by default; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 for GPU workers.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0
COPY pyproject.toml README.md ./
COPY models ./models
COPY stream ./stream
COPY query ./query
COPY lookalike ./lookalike
RUN pip install . && mkdir -p /app/data && chown nobody /app/data
USER nobody
ENTRYPOINT ["lookalike"]
