# Redis with Sentinel for roomlb's registry: a master, two replicas and
# three sentinels that promote a replica when the master is gone. Use it
# instead of redis.nomad.hcl when one Redis is not available enough.
#
# roomlb connects through the sentinels (go-redis's failover URL: the
# sentinels' addresses, the master's name and its password):
#
#   redis://sentinel.service.consul:26379?master_name=roomlb&password=REDIS_PASSWORD
#
# as redis_url in the roomlb-node and roomlb-router variables. Through
# Sentinel every heartbeat, claim and transfer waits until a replica has it
# (WAIT; --redis-replicas, 1 by default with such a URL): a failover
# promotes a replica, and a write it never got would be lost while its node
# counts on it. So run two replicas: after a failover one is left to
# acknowledge writes while the old master comes back as a replica (with one,
# every node stops serving until it does). The settings roomlb needs are the
# same as redis.nomad.hcl's: noeviction and an append-only file.
#
# The replicas and sentinels find the first master by its Consul name (the
# sentinels resolve host names); after a failover Sentinel reconfigures every
# Redis it watches, the old master too when it comes back, whatever the
# Consul names say.
#
#   nomad var put nomad/jobs/redis-sentinel password=$(openssl rand -hex 24)
#   nomad job run deploy/nomad/redis-sentinel.nomad.hcl

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "redis-sentinel" {
  datacenters = var.datacenters
  type        = "service"

  group "master" {
    count = 1

    network {
      port "redis" {
        static = 6379
      }
    }

    service {
      name = "redis-master"
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
        image      = "redis:7"
        entrypoint = ["/bin/sh", "-c"]
        args       = ["exec redis-server --requirepass \"$REDIS_PASSWORD\" --masterauth \"$REDIS_PASSWORD\" --maxmemory-policy noeviction --appendonly yes --appendfsync everysec --dir /data"]
        ports      = ["redis"]
      }

      template {
        destination = "secrets/redis.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/redis-sentinel" }}REDIS_PASSWORD={{ .password }}{{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 2048
      }
    }
  }

  group "replica" {
    count = 2

    network {
      port "redis" {
        static = 6379
      }
    }

    # One Redis per machine: a machine that fails takes one copy only.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    service {
      name = "redis-replica"
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
        image      = "redis:7"
        entrypoint = ["/bin/sh", "-c"]
        args       = ["exec redis-server --replicaof redis-master.service.consul 6379 --requirepass \"$REDIS_PASSWORD\" --masterauth \"$REDIS_PASSWORD\" --maxmemory-policy noeviction --appendonly yes --appendfsync everysec --dir /data"]
        ports      = ["redis"]
      }

      template {
        destination = "secrets/redis.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/redis-sentinel" }}REDIS_PASSWORD={{ .password }}{{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 2048
      }
    }
  }

  group "sentinel" {
    count = 3

    network {
      port "sentinel" {
        static = 26379
      }
    }

    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    service {
      name = "sentinel"
      port = "sentinel"

      check {
        type     = "tcp"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "sentinel" {
      driver = "docker"

      config {
        image      = "redis:7"
        entrypoint = ["/bin/sh", "-c"]
        # A sentinel rewrites its configuration file: a copy of its own.
        args  = ["cp /local/sentinel.conf /data/sentinel.conf && exec redis-server /data/sentinel.conf --sentinel"]
        ports = ["sentinel"]
      }

      template {
        destination = "local/sentinel.conf"
        data        = <<-EOT
          port 26379
          dir /data
          sentinel resolve-hostnames yes
          sentinel announce-hostnames yes
          sentinel monitor roomlb redis-master.service.consul 6379 2
          {{ with nomadVar "nomad/jobs/redis-sentinel" }}sentinel auth-pass roomlb {{ .password }}{{ end }}
          sentinel down-after-milliseconds roomlb 2000
          sentinel failover-timeout roomlb 10000
          sentinel parallel-syncs roomlb 1
        EOT
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
