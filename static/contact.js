// Contact forms: one button per channel opens its form (one at a time). Each form posts as JSON with its
// Turnstile token and shows the outcome in its status line. The Turnstile script loads only when a
// visitor first opens a form (nothing third-party before that), renders explicitly into that form, and
// if it cannot load or run, the visitor is told so instead of meeting a blank box and a failed send.
// Everything shown is set with textContent: nothing from the server is parsed as HTML.
(function () {
  "use strict";

  var section = document.querySelector(".contact");
  if (!section) return;
  var FIELDS = { sms: ["message"], email: ["email", "subject", "message"], discord: ["handle", "message"] };
  var sitekey = section.getAttribute("data-turnstile-sitekey");
  var scriptUrl = section.getAttribute("data-turnstile-script");
  var LOAD_TIMEOUT = 15000;
  var UNAVAILABLE = "The anti-spam check could not load, so messages can't be sent from here right now. " +
    "Check your connection or allow challenges.cloudflare.com in your content blocker, then reload the page.";
  var turnstileReady = null;  // a Promise of window.turnstile, once asked for

  function loadTurnstile() {
    if (turnstileReady) return turnstileReady;
    turnstileReady = new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      var timer = setTimeout(function () { reject(new Error("timeout")); }, LOAD_TIMEOUT);
      script.src = scriptUrl;
      script.async = true;
      script.addEventListener("load", function () {
        clearTimeout(timer);
        if (window.turnstile && typeof window.turnstile.render === "function") resolve(window.turnstile);
        else reject(new Error("no turnstile"));
      });
      script.addEventListener("error", function () { clearTimeout(timer); reject(new Error("blocked")); });
      document.head.appendChild(script);
    });
    return turnstileReady;
  }

  function show(form, state, text) {
    var status = form.querySelector(".form-status");
    status.dataset.state = state;
    status.textContent = text;
  }

  function errorText(response, body) {
    var text = body && typeof body.error === "string" ? body.error : "Something went wrong (" + response.status + ")";
    var wait = parseInt(response.headers.get("Retry-After") || "", 10);
    if (response.status === 429 && wait > 0) text += " (try again in " + wait + " s)";
    return text;
  }

  // Per form: the widget's id once rendered, and whether the check can work at all.
  function Form(form) {
    var channel = form.dataset.channel;
    var button = form.querySelector('button[type="submit"]');
    var box = form.querySelector(".turnstile");
    var widget = null, broken = false, token = "";

    this.open = function () {
      if (!sitekey || widget !== null || broken) return;
      loadTurnstile().then(function (turnstile) {
        box.hidden = false;
        widget = turnstile.render(box, {
          sitekey: sitekey,
          action: "contact-" + channel,
          callback: function (value) { token = value; if (form.querySelector(".form-status").dataset.state === "warn") show(form, "", ""); },
          "expired-callback": function () { token = ""; },
          "error-callback": function () {
            token = "";
            show(form, "warn", "The anti-spam check could not run in this browser. Reload the page to try again.");
            return true;  // handled: no console noise from the widget
          },
        });
      }).catch(function () {
        broken = true;
        box.hidden = true;
        button.disabled = true;
        show(form, "error", UNAVAILABLE);
      });
    };

    function reset() {
      // Tokens are single-use: ask for a new one after every attempt.
      token = "";
      if (widget !== null && window.turnstile) {
        try { window.turnstile.reset(widget); } catch (e) { /* widget gone */ }
      }
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (broken) { show(form, "error", UNAVAILABLE); return; }
      if (sitekey && !token) {
        show(form, "warn", widget === null ? "The anti-spam check is still loading…" : "Please complete the anti-spam check first.");
        return;
      }
      var payload = { turnstileToken: token };
      (FIELDS[channel] || []).forEach(function (name) {
        var field = form.elements.namedItem(name);
        if (field && field.value !== "") payload[name] = field.value;
      });
      button.disabled = true;
      show(form, "pending", "Sending…");
      fetch(form.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(payload),
      }).then(function (response) {
        return response.json().catch(function () { return null; }).then(function (body) {
          if (response.ok && body && body.ok) {
            show(form, "ok", "Sent! Thanks for your message.");
            form.reset();
          } else {
            show(form, "error", errorText(response, body));
          }
        });
      }).catch(function () {
        show(form, "error", "Network error, please try again.");
      }).then(function () {
        button.disabled = false;
        reset();
      });
    });
  }

  var tabs = Array.prototype.slice.call(section.querySelectorAll(".contact-tab"));
  tabs.forEach(function (tab) {
    var panel = document.getElementById(tab.getAttribute("aria-controls"));
    if (!panel) return;
    var form = new Form(panel);
    tab.addEventListener("click", function () {
      var opening = tab.getAttribute("aria-expanded") !== "true";
      tabs.forEach(function (other) {
        other.setAttribute("aria-expanded", "false");
        var otherPanel = document.getElementById(other.getAttribute("aria-controls"));
        if (otherPanel) otherPanel.hidden = true;
      });
      if (!opening) return;
      tab.setAttribute("aria-expanded", "true");
      panel.hidden = false;
      form.open();
    });
  });
})();
