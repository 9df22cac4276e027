# One OpenTogetherTube monolith per allocation, with the roomlb sidecar next
# to it in the same network namespace. Scale with `count`; every allocation
# is one roomlb node (its id is the allocation id).
#
# Variables (once; the secret is the routers' too, see roomlb-router.nomad.hcl;
# the Redis password is redis.nomad.hcl's):
#
#   SECRET=$(openssl rand -hex 16)
#   nomad var put nomad/jobs/ott-node \
#     secret=$SECRET \
#     redis_url=redis://:REDIS_PASSWORD@redis.service.consul:6379 \
#     session_secret=$(openssl rand -hex 32) \
#     database_url=postgres://ott:PASSWORD@postgres.service.consul:5432/ott
#   nomad job run -var roomlb_image=$REGISTRY/roomlb:TAG deploy/nomad/roomlb-node.nomad.hcl
#
# Every monolith must share OpenTogetherTube's session secret (a client's
# session cookie is read by whichever node serves its room) and its
# database (permanent rooms, users): Postgres, not the default SQLite file,
# which would be one per allocation.
#
# Stopping an allocation (deploys, scale-in, node drains): the sidecar is
# the group's leader, so Nomad sends it SIGTERM first, while the monolith
# still runs: it drains (each room waits for the monolith's last state
# write, is unloaded, released and offered to another node), deregisters
# and exits 0 within ROOMLB_DRAIN_TIMEOUT. Only then does Nomad stop the
# monolith, which exits without writing its rooms (the real OpenTogetherTube
# server does not flush on SIGTERM): by then it holds none.
#
# A sidecar that dies is restarted at once; one that cannot run fails the
# allocation, so its monolith never goes on holding stale copies of rooms
# that moved (it would reap them after room.unload_after, 300 s, and delete
# their state in Redis, though they live elsewhere).
#
# kill_timeout stays within the Nomad client's default max_kill_timeout
# (30 s); raise that client setting to drain longer.

variable "ott_image" {
  type    = string
  default = "dyc3/opentogethertube:latest"
}

# The image `docker build -t $REGISTRY/roomlb .` made and pushed (README,
# "Deploy on Nomad").
variable "roomlb_image" {
  type = string
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "ott-node" {
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "2m"
    auto_revert      = true
  }

  group "node" {
    count = 3

    network {
      mode = "bridge"
      # Routers connect here; the monolith's own ports stay inside the
      # allocation (its balancer port has no authentication).
      port "sidecar" {}
    }

    service {
      name = "roomlb-sidecar"
      port = "sidecar"

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "monolith" {
      driver       = "docker"
      kill_timeout = "10s"

      # Started before the sidecar and kept running beside it; stopped
      # after the leader (the sidecar) has drained.
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

      config {
        image = var.ott_image
      }

      env {
        PORT              = "3000"
        BALANCING_ENABLED = "true"
        BALANCING_PORT    = "3002"
        BALANCING_REGION  = "${NOMAD_REGION}"
      }

      template {
        destination = "secrets/ott.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/ott-node" }}
          REDIS_URL={{ .redis_url }}
          SESSION_SECRET={{ .session_secret }}
          DB_MODE=postgres
          DATABASE_URL={{ .database_url }}
          {{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }

    task "sidecar" {
      driver = "docker"
      leader = true

      # Longer than ROOMLB_DRAIN_TIMEOUT, so a drain is never cut short,
      # and within the client's default max_kill_timeout (30 s).
      kill_timeout = "28s"

      restart {
        attempts = 3
        interval = "5m"
        delay    = "0s"
        mode     = "fail"
      }

      config {
        image = var.roomlb_image
        args  = ["sidecar"]
      }

      env {
        ROOMLB_NODE_ID        = "${NOMAD_ALLOC_ID}"
        ROOMLB_LISTEN         = "0.0.0.0:${NOMAD_PORT_sidecar}"
        ROOMLB_ADVERTISE      = "${NOMAD_HOST_ADDR_sidecar}"
        ROOMLB_REGION         = "${NOMAD_REGION}"
        ROOMLB_MONOLITH       = "ws://127.0.0.1:3002/"
        ROOMLB_CAPACITY       = "5000"
        ROOMLB_DRAIN_TIMEOUT  = "25s"
        ROOMLB_SHUTDOWN_FLUSH = "3s"
        ROOMLB_LOG_LEVEL      = "info"
      }

      template {
        destination = "secrets/roomlb.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/ott-node" }}
          ROOMLB_SECRET={{ .secret }}
          ROOMLB_REDIS_URL={{ .redis_url }}
          {{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
