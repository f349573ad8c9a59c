#!/bin/sh
# Build the libFuzzer harnesses (clang required) into $1, by default
# tests/fuzz/bin.  Run one with its seed corpus, e.g.:
#   tests/fuzz/bin/fuzz_proto -dict=tests/fuzz/proto.dict -max_total_time=60 /tmp/corpus tests/fuzz/corpus/proto
# (the first directory collects new inputs; keep the seeds read-only).
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$top/tests/fuzz/bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)

CC=${CC:-clang}
CFLAGS="-std=gnu11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -Wall -Wextra -Wno-unused-parameter"

cd "$top"
$CC $CFLAGS -I src tests/fuzz/fuzz_addr.c src/common/addr.c -o "$out/fuzz_addr"
$CC $CFLAGS -I src tests/fuzz/fuzz_proto.c src/smtp/smtp_proto.c src/common/addr.c src/common/dsn.c \
    src/common/util.c src/common/log.c src/common/json.c src/common/metrics.c -o "$out/fuzz_proto"
$CC $CFLAGS -I src tests/fuzz/fuzz_json.c src/common/util.c src/common/log.c src/common/json.c src/common/metrics.c \
    -o "$out/fuzz_json"
$CC $CFLAGS -I src $(pkg-config --cflags gmime-3.0) \
    tests/fuzz/fuzz_message_json.c src/delivery/message_json.c \
    src/common/util.c src/common/log.c src/common/json.c src/common/metrics.c $(pkg-config --libs gmime-3.0) \
    -o "$out/fuzz_message_json"
$CC $CFLAGS -I src tests/fuzz/fuzz_authres.c src/smtp/authres.c src/smtp/spf.c src/common/threadpool.c \
    src/common/util.c src/common/log.c src/common/json.c src/common/metrics.c -lspf2 -o "$out/fuzz_authres"
$CC $CFLAGS -I src tests/fuzz/fuzz_spf_record.c src/smtp/spf.c src/common/threadpool.c src/common/util.c \
    src/common/log.c src/common/json.c src/common/metrics.c -lspf2 -o "$out/fuzz_spf_record"
$CC $CFLAGS -I src tests/fuzz/fuzz_envelope.c src/common/envelope.c src/common/dsn.c \
    src/common/util.c src/common/log.c src/common/json.c src/common/metrics.c -o "$out/fuzz_envelope"
$CC $CFLAGS -I src tests/fuzz/fuzz_proxy.c src/smtp/proxy.c -o "$out/fuzz_proxy"
$CC $CFLAGS -I src tests/fuzz/fuzz_milter.c src/smtp/milter.c \
    src/common/util.c src/common/log.c src/common/json.c src/common/metrics.c \
    -o "$out/fuzz_milter"
# The relay client's pure parsers; relay.c needs its libraries to link.
RELAY_SRC="src/delivery/relay.c src/delivery/dane.c src/common/dns_answer.c src/delivery/mta_sts.c src/delivery/delivery.c
  src/delivery/mime7bit.c src/common/dsn.c
  src/common/util.c src/common/log.c src/common/json.c src/common/metrics.c"
RELAY_LIBS="-lssl -lcrypto -lcurl -lresolv $(pkg-config --libs gmime-3.0)"
$CC $CFLAGS -I src $(pkg-config --cflags gmime-3.0) \
    tests/fuzz/fuzz_relay_reply.c $RELAY_SRC $RELAY_LIBS \
    -o "$out/fuzz_relay_reply"
$CC $CFLAGS -I src $(pkg-config --cflags gmime-3.0) \
    tests/fuzz/fuzz_relay_mx.c $RELAY_SRC $RELAY_LIBS \
    -o "$out/fuzz_relay_mx"
$CC $CFLAGS -I src tests/fuzz/fuzz_exporter.c src/metrics/exporter_parse.c \
    -o "$out/fuzz_exporter"
echo "built $out/fuzz_addr $out/fuzz_proto $out/fuzz_json $out/fuzz_message_json"
echo "built $out/fuzz_authres $out/fuzz_spf_record"
echo "built $out/fuzz_envelope $out/fuzz_relay_reply $out/fuzz_relay_mx"
echo "built $out/fuzz_exporter"
echo "built $out/fuzz_proxy"
echo "built $out/fuzz_milter"
