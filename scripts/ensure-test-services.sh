#!/usr/bin/env bash
# What the test suite needs beyond RabbitMQ and Redis: PostgreSQL (the store's tests run against
# SQLite and PostgreSQL) and Debian's chromium (the browser tests). Starts or installs them where
# this machine allows. Set LLAMAGATE_TEST_POSTGRES_URL to use another PostgreSQL server.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [ -z "${LLAMAGATE_TEST_POSTGRES_URL:-}" ] && ! port_open 127.0.0.1 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  else
    echo "error: PostgreSQL is not running on 127.0.0.1:5432 (apt-get install postgresql)" >&2
    exit 1
  fi
  for _ in $(seq 1 30); do port_open 127.0.0.1 5432 && break; sleep 1; done
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser tests (apt-get install chromium)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium >/dev/null || { $sudo apt-get update -q >/dev/null &&
    $sudo apt-get install -y -q chromium >/dev/null; }
fi
echo "PostgreSQL and chromium are ready"
