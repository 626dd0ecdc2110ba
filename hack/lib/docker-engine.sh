#!/usr/bin/env bash
# A Docker engine for building and running the operator's image, on machines that have one and
# on machines that have none running.
#
#   hack/lib/docker-engine.sh up       use the engine that answers, or start a private one
#   hack/lib/docker-engine.sh down     stop the private engine (if this script started it)
#   hack/lib/docker-engine.sh env      print `export DOCKER_HOST=… DOCKER=…` for the engine in use
#   hack/lib/docker-engine.sh status   exit 0 iff an engine answers
#
# The engine that `docker info` reaches (Docker Desktop, a system service, DOCKER_HOST) is used as
# it is. Otherwise, as root (or with sudo), Debian's docker.io is installed if needed and a private
# dockerd is started: its own socket (owned by the calling user), data and exec roots under
# $DBMIGRATE_CACHE/docker, no iptables rules and no default bridge (builds and the local pod
# executor's containers use the host network; tests may create a bridge network). `DOCKER`
# names the client to use: the engine package's own client when the `docker` on PATH has no
# BuildKit (a client of 23 or later without the buildx plugin cannot build this Dockerfile).
set -euo pipefail

CACHE_ROOT=${DBMIGRATE_CACHE:-$HOME/.cache/dbmigrate}
STATE=$CACHE_ROOT/docker
SOCK=$STATE/run/docker.sock
PIDFILE=$STATE/run/dockerd.pid
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf '[docker-engine %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

private_running() {
  [ -S "$SOCK" ] && [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# The client that can build with BuildKit against the engine at $1 (a DOCKER_HOST or "").
pick_client() {
  local host=$1 c
  for c in docker "$(engine_client)"; do
    [ -n "$c" ] && command -v "$c" >/dev/null || continue
    DOCKER_HOST=$host "$c" info >/dev/null 2>&1 || continue
    if DOCKER_HOST=$host "$c" buildx version >/dev/null 2>&1; then echo "$c"; return 0; fi
    # Clients before 23 build with the engine's own BuildKit (DOCKER_BUILDKIT=1).
    local major
    major=$("$c" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then echo "$c"; return 0; fi
  done
  return 1
}

# The client shipped with the engine package (matches the private dockerd's API version).
engine_client() {
  if command -v dpkg >/dev/null && dpkg -s docker.io >/dev/null 2>&1; then
    dpkg -L docker.io | grep -m1 '/bin/docker$' || true
  fi
}

ambient_answers() { docker info >/dev/null 2>&1; }

cmd_env() {
  local host="" client
  if private_running; then
    host="unix://$SOCK"
  elif ! ambient_answers; then
    die "no Docker engine answers; run: $0 up"
  else
    host=${DOCKER_HOST:-}
  fi
  client=$(pick_client "$host") || die "no docker client here can build with BuildKit (install the buildx plugin)"
  [ -n "$host" ] && echo "export DOCKER_HOST=$host"
  echo "export DOCKER=$client"
  echo "export DOCKER_BUILDKIT=1"
}

install_engine() {
  command -v dockerd >/dev/null && [ -n "$(engine_client)" ] && return 0
  log "installing Debian's docker.io (the engine and its client)"
  export DEBIAN_FRONTEND=noninteractive
  # The package's own services are not wanted: this script starts a private daemon.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
}

cmd_up() {
  if private_running || ambient_answers; then
    cmd_env
    return 0
  fi
  install_engine
  mkdir -p "$STATE/run" "$STATE/data" "$STATE/exec"
  # overlay2 where the kernel and the filesystem allow it, vfs (slower, always works) otherwise.
  local driver
  for driver in overlay2 vfs; do
    log "starting a private dockerd ($driver) on $SOCK"
    $SUDO dockerd --host "unix://$SOCK" --pidfile "$PIDFILE" \
      --data-root "$STATE/data" --exec-root "$STATE/exec" --storage-driver "$driver" \
      --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
      >"$STATE/dockerd-$driver.log" 2>&1 &
    local i
    for i in $(seq 1 60); do
      if DOCKER_HOST="unix://$SOCK" "$(engine_client)" info >/dev/null 2>&1; then
        # The socket is root's power: for the user who asked, no one else.
        $SUDO chown "$(id -u):$(id -g)" "$SOCK"
        log "engine ready ($driver)"
        cmd_env
        return 0
      fi
      kill -0 $! 2>/dev/null || break
      sleep 0.5
    done
    kill $! 2>/dev/null || true
    wait $! 2>/dev/null || true
    log "dockerd with $driver did not start: $(tail -1 "$STATE/dockerd-$driver.log")"
  done
  die "could not start a Docker engine (logs in $STATE)"
}

cmd_down() {
  private_running || return 0
  local pid
  pid=$(cat "$PIDFILE")
  $SUDO kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { log "stopped"; return 0; }; sleep 0.5; done
  $SUDO kill -9 "$pid" 2>/dev/null || true
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) private_running || ambient_answers ;;
  *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac
