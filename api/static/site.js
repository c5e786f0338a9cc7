// Copy buttons and confirmations; no framework, no build step.
"use strict";

function copyText(text, button) {
  var done = function () {
    var label = button.textContent;
    button.textContent = "Copied";
    button.classList.add("copied");
    setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text) && done(); });
  } else if (fallbackCopy(text)) {
    done();
  }
}

// For pages served over plain http, where the Clipboard API is unavailable.
function fallbackCopy(text) {
  var area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  var copied = false;
  try { copied = document.execCommand("copy"); } catch (error) { copied = false; }
  document.body.removeChild(area);
  return copied;
}

document.addEventListener("click", function (event) {
  var button = event.target.closest(".copy-button");
  if (!button) return;
  var selector = button.getAttribute("data-copy-from");
  var source = selector ? document.querySelector(selector) : button.closest(".code-block").querySelector("code");
  if (source) copyText(source.textContent.trim(), button);
});

document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});
