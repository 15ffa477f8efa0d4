// A line terminal over a WebSocket back to the server that sent this page (ws:// or wss:// to
// match it), "binary" subprotocol: bytes in, bytes out, shown as UTF-8 text.
"use strict";

(function () {
  const MAX_LINES = 2000;  // scrollback kept on screen
  const screen = document.getElementById("screen");
  const status = document.getElementById("status");
  const input = document.getElementById("line");
  const form = document.getElementById("line-form");
  const reconnect = document.getElementById("reconnect");
  const encoder = new TextEncoder();
  let decoder = new TextDecoder("utf-8");
  let ws = null;

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + "/";
  }

  function show(text, cls) {
    const span = document.createElement("span");
    if (cls) span.className = cls;
    span.textContent = text;
    screen.appendChild(span);
    while (screen.childNodes.length > MAX_LINES) screen.removeChild(screen.firstChild);
    screen.scrollTop = screen.scrollHeight;
  }

  function setStatus(text, cls) {
    status.textContent = text;
    status.className = "status " + (cls || "");
  }

  function connect() {
    decoder = new TextDecoder("utf-8");
    const url = wsUrl();
    setStatus("connecting to " + url + " …");
    reconnect.hidden = true;
    ws = new WebSocket(url, ["binary"]);
    ws.binaryType = "arraybuffer";
    ws.onopen = function () {
      setStatus("connected to " + url + " (" + (ws.protocol || "no subprotocol") + ")", "open");
      input.disabled = false;
      input.focus();
    };
    ws.onmessage = function (event) {
      const data = typeof event.data === "string" ? event.data
        : decoder.decode(new Uint8Array(event.data), { stream: true });
      show(data.replace(/\r\n/g, "\n"));
    };
    ws.onclose = function (event) {
      setStatus("closed (code " + event.code + (event.reason ? ": " + event.reason : "") + ")",
        "closed");
      show("\n[connection closed]\n", "note");
      input.disabled = true;
      reconnect.hidden = false;
    };
    ws.onerror = function () {
      show("\n[WebSocket error: is the proxy's target running?]\n", "note");
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const line = input.value;
    show(line + "\n", "sent");
    ws.send(encoder.encode(line + "\r\n"));
    input.value = "";
  });
  reconnect.addEventListener("click", connect);
  connect();
})();
