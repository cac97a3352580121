# app.nomad.hcl: demo-app under baton, one baton per allocation.
#
# Nomad places and restarts allocations; baton, inside each one, reloads the
# app in place without dropping a connection. The environment comes from
# Consul KV (app/env/*) through a template: when a key changes, Nomad
# re-renders local/app.env and runs `baton reload`, which starts a new
# generation with the new environment and drains the old one only once the
# new one is ready. A broken change is rolled back by baton (the old
# generation keeps serving) and the script's exit 1 shows in the task's
# events: fail_on_error stays false, so Nomad does not kill a task whose
# old generation serves.
#
#   nomad job run examples/nomad/app.nomad.hcl
#   consul kv put app/env/GREETING hello     # -> in-place reload, every alloc
#   nomad alloc exec <alloc> /usr/local/bin/baton status --control /tmp/baton.sock
#
# Checked by tests/examples.rs (parsed with python-hcl2, and the task's and
# the script's command lines run for real). See examples/README.md.

job "app" {
  datacenters = ["dc1"]
  type        = "service"

  # A new job version (another binary, other flags) replaces allocations one
  # at a time, each new one healthy (baton's /health says 200 once its first
  # generation serves) before the next goes.
  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "2m"
    auto_revert      = true
  }

  group "app" {
    count = 3

    network {
      port "http" {}
      port "health" {}
    }

    service {
      name     = "app"
      port     = "http"
      provider = "consul"

      # In rotation while baton says 200 (`serving`); 503 (`starting`,
      # `draining`) takes the allocation out.
      check {
        name     = "baton health"
        type     = "http"
        port     = "health"
        path     = "/health"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "baton" {
      # exec: a chroot with the host's /usr, so /usr/local/bin/baton and the
      # app are the host's binaries. The task sees its own directories:
      # /local (the template's destination) and /tmp, where the control
      # socket goes: baton refuses a socket directory that others can write
      # unless it is sticky, and Nomad makes /local and /secrets 0777 but the
      # task's /tmp sticky.
      driver = "exec"

      config {
        command = "/usr/local/bin/baton"
        args = [
          "--listen", "${NOMAD_ADDR_http}",
          "--health", "${NOMAD_ADDR_health}",
          "--control", "/tmp/baton.sock",
          "--env-file", "/local/app.env",
          "--workers", "2",
          "--ready-timeout", "30s",
          "--drain-timeout", "20s",
          "--",
          "/usr/local/bin/demo-app",
        ]
      }

      # Stop: Nomad deregisters the service first and waits shutdown_delay
      # (what baton's --stop-delay does elsewhere), then sends kill_signal;
      # baton drains every worker and exits 0 within --drain-timeout.
      # kill_timeout must cover the drain (Nomad SIGKILLs after it) and stay
      # within the client's max_kill_timeout (30s by default).
      shutdown_delay = "5s"
      kill_signal    = "SIGTERM"
      kill_timeout   = "25s"

      template {
        data        = <<-EOT
        {{ range ls "app/env" }}{{ .Key }}={{ .Value }}
        {{ end }}
        EOT
        destination = "local/app.env"
        change_mode = "script"

        # `baton reload` returns once the new generation serves (exit 0) or
        # was rolled back (exit 1, the cause on stderr); its --timeout stays
        # under the script's timeout.
        change_script {
          command       = "/usr/local/bin/baton"
          args          = ["reload", "--control", "/tmp/baton.sock", "--timeout", "50s"]
          timeout       = "60s"
          fail_on_error = false
        }
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
