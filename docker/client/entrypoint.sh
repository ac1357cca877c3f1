#!/bin/sh
# The client's start: with FOOBAR_RESOLVERS (compose sets it), /etc/resolv.conf names those
# DNS servers itself, as a visitor's machine does, instead of Docker's resolver (which waits 4 s
# for a server that does not answer before it asks the next); then the command runs as the
# unprivileged `visitor`. Without it (a `docker run` of the image inside another container's
# network namespace, as the stack tests do) resolv.conf is left alone.
set -eu
if [ -n "${FOOBAR_RESOLVERS:-}" ]; then
  {
    for server in $FOOBAR_RESOLVERS; do
      echo "nameserver $server"
    done
    echo "options ${FOOBAR_RESOLVER_OPTIONS:-timeout:1 attempts:2 rotate}"
  } > /etc/resolv.conf
fi
exec setpriv --reuid=visitor --regid=visitor --init-groups -- "$@"
