// The homepage's "Try it" box: POST the prompt, read the server-sent events as they arrive,
// and append each chunk's delta text to the page.
"use strict";

(function () {
  var form = document.getElementById("demo-form");
  if (!form) return;
  var prompt = document.getElementById("demo-prompt");
  var output = document.getElementById("demo-output");
  var status = document.getElementById("demo-status");
  var send = document.getElementById("demo-send");
  var stop = document.getElementById("demo-stop");
  var csrfToken = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var controller = null;

  function setState(state, message) {
    output.setAttribute("data-state", state);
    status.textContent = message || "";
    var running = state === "waiting" || state === "streaming";
    send.disabled = running;
    stop.hidden = !running;
  }

  function errorMessage(body, response) {
    if (body && body.error && body.error.message) return body.error.message;
    return "The demo is unavailable right now (HTTP " + response.status + ").";
  }

  // One SSE event: `data: {json}` lines; `data: [DONE]` ends the stream. Returns false at the end.
  function handleEvent(block) {
    var lines = block.split("\n");
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (line.indexOf("data:") !== 0) continue;  // comments (keep-alives) and other fields
      var data = line.slice(5).trim();
      if (data === "[DONE]") return false;
      var chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      var choice = chunk.choices && chunk.choices[0];
      if (choice && choice.delta && choice.delta.content) {
        if (output.getAttribute("data-state") !== "streaming") setState("streaming", "Generating…");
        output.textContent += choice.delta.content;
      }
    }
    return true;
  }

  async function run() {
    controller = new AbortController();
    output.textContent = "";
    setState("waiting", "Waiting for the model…");
    var started = performance.now();
    try {
      var response = await fetch(form.action, {
        method: "POST",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken},
        body: JSON.stringify({prompt: prompt.value}),
        signal: controller.signal,
        credentials: "same-origin",
      });
      if (!response.ok) {
        var body = null;
        try { body = await response.json(); } catch (error) { body = null; }
        setState("error", errorMessage(body, response));
        return;
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var more = true;
      while (more) {
        var part = await reader.read();
        if (part.done) break;
        buffer += decoder.decode(part.value, {stream: true});
        var end;
        while (more && (end = buffer.indexOf("\n\n")) !== -1) {
          more = handleEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      var seconds = ((performance.now() - started) / 1000).toFixed(1);
      setState("done", "Done in " + seconds + " s.");
    } catch (error) {
      if (error.name === "AbortError") {
        setState("done", "Stopped.");
      } else {
        setState("error", error.message || "The stream was interrupted.");
      }
    } finally {
      controller = null;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!controller && prompt.value.trim()) run();
  });
  stop.addEventListener("click", function () {
    if (controller) controller.abort();
  });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
})();
