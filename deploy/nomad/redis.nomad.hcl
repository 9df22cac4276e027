# Redis for roomlb and OpenTogetherTube, with the settings roomlb needs:
# noeviction (an evicted lease is a lost room) and an append-only file
# (OpenTogetherTube's room state lives here; roomlb survives a Redis that
# lost its data, the rooms' state does not).

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
        args = [
          "redis-server",
          "--maxmemory-policy", "noeviction",
          "--appendonly", "yes",
          "--appendfsync", "everysec",
          "--dir", "/data",
        ]
        ports = ["redis"]
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
