# curl: the README's example is tested as written.
command -v curl >/dev/null && exit 0
[ "$(id -u)" = 0 ] || { echo "install curl (apt-get install curl)" >&2; exit 1; }
apt-get update -q && apt-get install -y -q curl
