#!/usr/bin/env bash
# `make run`: the bundled line service on 127.0.0.1:6081 and wsproxy in front of it on :6080,
# configured by wsproxy.ini.example. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m wsproxy.lineservice 127.0.0.1:6081 &
service=$!
trap 'kill $service 2>/dev/null; wait $service 2>/dev/null || true' EXIT
echo
echo "  wsproxy demo: open http://localhost:6080/ in a browser"
echo "  (or: python -m websockets ws://localhost:6080/), Ctrl-C to stop"
echo
$PY -m wsproxy -c wsproxy.ini.example
