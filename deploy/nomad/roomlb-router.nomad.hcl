# The stateless routers. Put any load balancer (or DNS) in front of them;
# TLS ends there, and its address belongs in ROOMLB_TRUSTED_PROXIES.
#
# The same secret and Redis as the nodes (roomlb-node.nomad.hcl):
#
#   nomad var put nomad/jobs/roomlb-router \
#     secret=$SECRET \
#     redis_url=redis://:REDIS_PASSWORD@redis.service.consul:6379
#   nomad job run -var roomlb_image=$REGISTRY/roomlb:TAG \
#     -var 'allowed_origins=https://ott.example.com' deploy/nomad/roomlb-router.nomad.hcl
#
# The client port is dynamic: the load balancer in front finds the routers
# through the roomlb-router service (Consul). A static port instead needs
# as many Nomad clients as routers (two allocations cannot bind one port on
# one machine).

# The image `docker build -t $REGISTRY/roomlb .` made and pushed.
variable "roomlb_image" {
  type = string
}

# Origins allowed to open WebSockets (comma-separated); "" allows every one.
variable "allowed_origins" {
  type = string
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "roomlb-router" {
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel     = 1
    min_healthy_time = "5s"
    auto_revert      = true
  }

  group "router" {
    count = 2

    network {
      port "http" {}
      port "admin" {}
    }

    service {
      name = "roomlb-router"
      port = "http"

      check {
        name     = "ready"
        type     = "http"
        port     = "admin"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "router" {
      driver = "docker"
      # In-flight requests finish and relayed WebSockets get a 1012 close
      # within ROOMLB_SHUTDOWN_TIMEOUT.
      kill_timeout = "15s"

      config {
        image = var.roomlb_image
        args  = ["router"]
        ports = ["http", "admin"]
      }

      env {
        ROOMLB_LISTEN           = "0.0.0.0:${NOMAD_PORT_http}"
        ROOMLB_ADMIN_LISTEN     = "0.0.0.0:${NOMAD_PORT_admin}"
        ROOMLB_REGION           = "${NOMAD_REGION}"
        ROOMLB_TRUSTED_PROXIES  = "10.0.0.0/8"
        ROOMLB_ALLOWED_ORIGINS  = var.allowed_origins
        ROOMLB_HOLD_TIMEOUT     = "5s"
        ROOMLB_SHUTDOWN_TIMEOUT = "10s"
      }

      template {
        destination = "secrets/roomlb.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/roomlb-router" }}
          ROOMLB_SECRET={{ .secret }}
          ROOMLB_REDIS_URL={{ .redis_url }}
          {{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 256
      }
    }
  }
}
