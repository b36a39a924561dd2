#!/usr/bin/env bash
# Start each service the tests need if it is down (the CI machine usually has them running).
set -uo pipefail

wait_port() {  # host port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && { echo "services: $1:$2 did not come up" >&2; return 1; }
    sleep 0.5
  done
}
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# tests/faults runs private MariaDB and RabbitMQ servers of its own (it never restarts the shared
# ones) and mounts a small ext4 image: their programs must be here even where the services run elsewhere.
missing=()
{ [ -x /usr/bin/mariadb-install-db ] && [ -x /usr/sbin/mariadbd ]; } || missing+=(mariadb-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
if [ ${#missing[@]} -gt 0 ]; then
  echo "services: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >/dev/null || echo "services: could not install ${missing[*]}" >&2
fi

if ! up 3306; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
  wait_port 127.0.0.1 3306 60
fi
if ! up 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_port 127.0.0.1 5432 60
fi
if ! up 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_port 127.0.0.1 5672 120
fi
if ! up 6379; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_port 127.0.0.1 6379 30
fi
# The stress and scale tests run many processes, each with a small pool: leave them room.
mysql -uroot -h127.0.0.1 -e "SET GLOBAL max_connections = GREATEST(@@max_connections, 500)" || true
exit 0
