# One image for both services; the command picks which: `msc cart-service` or `msc billing-service`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 msc && mkdir /data && chown msc:msc /data
COPY --from=build /install /usr/local
USER msc
ENV MSC_DATA_DIR=/data \
    MSC_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8080 8081
ENTRYPOINT ["msc"]
CMD ["cart-service"]
