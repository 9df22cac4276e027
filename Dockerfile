# The roomlb binary in a small image, for the Nomad jobs in deploy/nomad.
#   docker build -t roomlb .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /roomlb ./cmd/roomlb

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /roomlb /roomlb
ENTRYPOINT ["/roomlb"]
