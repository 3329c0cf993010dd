// The demo's stand-in for Cloudflare Turnstile's api.js (explicit rendering), served at /_demo/turnstile.js
// only by a server running `serve --demo` (demo/stand_ins.py verifies its tokens, each once). It shows the visitor
// that this check is a local stand-in, "passes" after a moment, and makes a fresh token after each reset.
(function () {
  "use strict";
  var widgets = {}, next = 0;

  function token() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "demo-pass-" + Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function check(widget) {
    widget.label.textContent = "Checking…";
    widget.box.dataset.state = "pending";
    setTimeout(function () {
      widget.label.textContent = "Demo anti-spam check passed (a local stand-in for Cloudflare Turnstile)";
      widget.box.dataset.state = "passed";
      widget.options.callback(token());
    }, 400);
  }

  window.turnstile = {
    render: function (element, options) {
      if (options.sitekey !== "demo-sitekey") throw new Error("demo Turnstile: unknown sitekey");
      var box = document.createElement("div"), label = document.createElement("span");
      box.className = "demo-turnstile";
      box.appendChild(label);
      element.appendChild(box);
      var id = "demo-" + (next += 1);
      widgets[id] = { box: box, label: label, options: options };
      check(widgets[id]);
      return id;
    },
    reset: function (id) { if (widgets[id]) check(widgets[id]); },
    remove: function (id) { if (widgets[id]) { widgets[id].box.remove(); delete widgets[id]; } },
  };
})();
