# The bucketgate image: a static-enough binary on distroless, running as non-root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin bucketgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/bucketgate /usr/local/bin/bucketgate
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bucketgate"]
CMD ["serve"]
