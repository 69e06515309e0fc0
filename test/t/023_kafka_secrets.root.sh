#!/usr/bin/env bash
# test/t/023_kafka_secrets.root.sh: the files 023_kafka_secrets.pl needs and
# cannot make itself (it runs as the server's user).  test/tap.sh runs this
# as root before the test; the test finds DIR in OMS_TAP_ROOT_DIR.
#   other-user.properties  owned by nobody, 0644: oms must refuse a file
#                          owned by neither the server's user nor root
#   root.properties        owned by root, group of the server's user, 0640:
#                          accepted (a root-managed secret shared through
#                          the server's group), with random secrets the
#                          test reads to check that none of them leaks
# Usage: test/t/023_kafka_secrets.root.sh DIR SERVER_USER
set -euo pipefail

dir=$1
group=$(id -gn "$2")

# Letters only, so that no hex id or number in a log can match by chance.
secret() {
	/usr/bin/python3 -c 'import secrets, string, sys
print(sys.argv[1] + "".join(secrets.choice(string.ascii_letters) for _ in range(30)))' "$1"
}

install -o nobody -g "$(id -gn nobody)" -m 0644 /dev/null "$dir/other-user.properties"
printf 'security.protocol=plaintext\n' >"$dir/other-user.properties"

install -o root -g "$group" -m 0640 /dev/null "$dir/root.properties"
cat >"$dir/root.properties" <<EOF
security.protocol=plaintext
sasl.username=$(secret Zr)
sasl.password=$(secret Zs)
debug=all
socket.keepalive.enable=true
EOF
