// Contact forms: post each form as JSON with its Turnstile token and show the outcome in its status line.
// Everything shown is set with textContent: nothing from the server is parsed as HTML.
(function () {
  "use strict";

  var FIELDS = { sms: ["message"], email: ["email", "subject", "message"], discord: ["handle", "message"] };

  function turnstileToken(form) {
    // The widget adds this hidden input inside the form once the visitor passed the challenge.
    var input = form.querySelector('input[name="cf-turnstile-response"]');
    return input ? input.value : "";
  }

  function resetWidget(form) {
    // Tokens are single-use: ask for a new one after every attempt.
    var widget = form.querySelector(".cf-turnstile");
    if (widget && window.turnstile && typeof window.turnstile.reset === "function") {
      try { window.turnstile.reset(widget); } catch (e) { /* widget not rendered */ }
    }
  }

  function show(form, state, text) {
    var status = form.querySelector(".form-status");
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  function errorText(response, body) {
    var text = body && typeof body.error === "string" ? body.error : "Something went wrong (" + response.status + ")";
    var wait = parseInt(response.headers.get("Retry-After") || "", 10);
    if (response.status === 429 && wait > 0) text += " (try again in " + wait + " s)";
    return text;
  }

  function attach(form) {
    var channel = form.dataset.channel;
    var button = form.querySelector('button[type="submit"]');
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var payload = { turnstileToken: turnstileToken(form) };
      (FIELDS[channel] || []).forEach(function (name) {
        var field = form.elements.namedItem(name);
        if (field && field.value !== "") payload[name] = field.value;
      });
      if (button) button.disabled = true;
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
        if (button) button.disabled = false;
        resetWidget(form);
      });
    });
  }

  document.querySelectorAll("form.contact-form[data-channel]").forEach(attach);
})();
