# Redis for roomlb and OpenTogetherTube, with the settings roomlb needs:
# noeviction (an evicted owner or heartbeat key is a lost room) and an append-only file
# (OpenTogetherTube's room state lives here; roomlb survives a Redis that
# lost its data, the rooms' state does not).
#
# Its data lives on a host volume: each Nomad client that may run it needs
#
#   client { host_volume "redis" { path = "/opt/redis" } }
#
# in its configuration (or drop the volume block and its mount for an
# ephemeral Redis, which loses every room's state with its allocation).
# The password comes from a variable, and goes into the Redis URLs of the
# roomlb-node and roomlb-router variables:
#
#   nomad var put nomad/jobs/redis password=$(openssl rand -hex 24)
#   nomad job run deploy/nomad/redis.nomad.hcl

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "redis" {
  datacenters = var.datacenters
  type        = "service"

  group "redis" {
    count = 1

    network {
      port "redis" {
        static = 6379
      }
    }

    volume "redis" {
      type   = "host"
      source = "redis"
    }

    service {
      name = "redis"
      port = "redis"

      check {
        type     = "tcp"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "redis" {
      driver = "docker"

      config {
        image = "redis:7"
        # The password from the template below, read by the shell.
        entrypoint = ["/bin/sh", "-c"]
        args = ["exec redis-server --requirepass \"$REDIS_PASSWORD\" --maxmemory-policy noeviction --appendonly yes --appendfsync everysec --dir /data"]
        ports = ["redis"]
      }

      template {
        destination = "secrets/redis.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/redis" }}REDIS_PASSWORD={{ .password }}{{ end }}
        EOT
      }

      volume_mount {
        volume      = "redis"
        destination = "/data"
      }

      resources {
        cpu    = 1000
        memory = 2048
      }
    }
  }
}
