# One image, four programs: tollgate (serve, settle, migrate, paywall, prices), the fake OpenAI
# upstream used as the demo upstream, the Envoy emulator (for machines without Envoy), and
# devchain (deploys the test USDC on the compose anvil; development only).
# docker-compose.yml runs the real Envoy image in front; this image never contains Envoy.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -o /out/tollgate ./cmd/tollgate \
 && go build -trimpath -o /out/fakeupstream ./e2e/cmd/fakeupstream \
 && go build -trimpath -o /out/envoyemu ./e2e/cmd/envoyemu \
 && go build -trimpath -o /out/devchain ./e2e/cmd/devchain

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY envoy/envoy.yaml /etc/tollgate/envoy.yaml
USER nonroot
ENTRYPOINT []
CMD ["tollgate", "help"]
