# One OpenTogetherTube monolith per allocation, with the roomlb sidecar next
# to it in the same network namespace. Scale with `count`; every allocation
# is one roomlb node (its id is the allocation id).
#
#   nomad var put nomad/jobs/ott-node secret=$(openssl rand -hex 16) redis_url=redis://redis.service.consul:6379
#   nomad job run deploy/nomad/roomlb-node.nomad.hcl
#
# Stopping an allocation (deploys, scale-in, node drains): Nomad stops the
# monolith first; it closes its balancer link with 1001 and writes every
# room to Redis; the sidecar waits ROOMLB_SHUTDOWN_FLUSH, releases the rooms
# and offers them to the other nodes, then Nomad stops the sidecar (SIGTERM:
# it deregisters and exits 0 within ROOMLB_DRAIN_TIMEOUT, well inside its
# kill_timeout).

variable "ott_image" {
  type    = string
  default = "dyc3/opentogethertube:latest"
}

variable "roomlb_image" {
  type    = string
  default = "ghcr.io/roomlb/roomlb:latest"
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
      kill_timeout = "15s"

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
          {{ with nomadVar "nomad/jobs/ott-node" }}REDIS_URL={{ .redis_url }}{{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }

    task "sidecar" {
      driver = "docker"

      lifecycle {
        hook    = "poststart"
        sidecar = true
      }

      # Longer than ROOMLB_DRAIN_TIMEOUT, so a drain is never cut short.
      kill_timeout = "45s"

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
        ROOMLB_DRAIN_TIMEOUT  = "30s"
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
