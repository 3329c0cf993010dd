// The live Discord presence card: one EventSource, one 1-second ticker, text only (never innerHTML).
// The card keeps one height whatever it shows (CSS); lines it does not need are hidden, not removed.
(function () {
  "use strict";
  var card = document.getElementById("presence");
  if (!card || !card.getAttribute("data-stream-url")) return;

  var $ = function (sel) { return card.querySelector(sel); };
  var dot = $(".status-dot"), statusText = $(".status-text"), verbText = $(".presence-verb");
  var titleLine = $(".presence-activity"), detailsLine = $(".presence-details"), stateLine = $(".presence-state");
  var img = $(".presence-image"), icon = $(".presence-icon use"), progress = $(".presence-progress");
  var bar = $(".presence-progress .bar span"), elapsedText = $(".presence-progress .elapsed");
  var totalText = $(".presence-progress .total"), elapsedLine = $(".presence-elapsed"), elapsedClock = $(".presence-elapsed .clock");
  var avatarStatus = document.querySelector(".avatar-status");

  var STATUS = { online: "Online", idle: "Idle", dnd: "Do Not Disturb", offline: "Offline" };
  var VERB = { 0: "Playing", 1: "Streaming", 2: "Listening to", 3: "Watching", 5: "Competing in" };
  var current = null;  // the activity the ticker follows

  // Discord asset references: spotify:ID and mp:PATH become URLs on the two hosts the page's CSP admits;
  // anything else (other hosts included) is dropped, so the card never asks for an image the CSP blocks.
  function assetUrl(ref) {
    if (typeof ref !== "string" || !ref) return null;
    if (ref.indexOf("spotify:") === 0) return "https://i.scdn.co/image/" + encodeURIComponent(ref.slice(8));
    if (ref.indexOf("mp:") === 0) return "https://media.discordapp.net/" + encodeURI(ref.slice(3).replace(/^\/+/, ""));
    if (/^https:\/\/(i\.scdn\.co|media\.discordapp\.net)\//i.test(ref)) return ref;
    return null;
  }

  function clock(ms) {
    var s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    var ss = ("0" + (s % 60)).slice(-2);
    return h ? h + ":" + ("0" + m).slice(-2) + ":" + ss : m + ":" + ss;
  }

  function setText(el, text) { el.textContent = text || ""; el.hidden = !text; }

  img.addEventListener("error", function () { img.hidden = true; });  // the type icon shows; src kept, not refetched
  img.addEventListener("load", function () { img.hidden = false; });

  // What the card's lines say for one activity: a small verb line, a bold title, two muted lines.
  // Music reads best as "Listening to Spotify" over the song; a custom status is its own text.
  function lines(a) {
    if (a.type === 4) return { verb: "", title: a.state || a.name, details: a.details, state: "" };
    var verb = VERB[a.type] || "";
    if (a.type === 2 && a.details) return { verb: verb + " " + (a.name || ""), title: a.details, details: a.state, state: "" };
    return { verb: verb, title: a.name, details: a.details, state: a.state };
  }

  function render(snapshot) {
    var status = snapshot && STATUS[snapshot.status] ? snapshot.status : "offline";
    dot.className = "status-dot status-" + status;
    statusText.textContent = STATUS[status];
    if (avatarStatus) avatarStatus.className = "avatar-status status-" + status;
    var a = snapshot && snapshot.activity ? snapshot.activity : null;
    current = a;
    card.setAttribute("data-status", status);
    card.setAttribute("data-activity-type", a ? String(a.type) : "");
    var text = a ? lines(a) : { verb: "", title: status === "offline" ? "" : "Nothing on right now", details: "", state: "" };
    setText(verbText, text.verb);
    setText(titleLine, text.title);
    setText(detailsLine, text.details);
    setText(stateLine, text.state);
    var known = a && (VERB[a.type] !== undefined || a.type === 4);
    icon.setAttribute("href", "#act-" + (known ? a.type : "off"));
    var src = a ? assetUrl(a.largeImage) : null;
    if (src) {
      if (img.getAttribute("src") !== src) { img.hidden = true; img.src = src; }
      img.alt = a.largeText || "";
      img.title = a.largeText || "";
    } else {
      img.hidden = true;
      img.removeAttribute("src");
      img.alt = "";
    }
    tick();
  }

  function tick() {
    var a = current, now = Date.now();
    var timed = a && typeof a.startedAt === "number";
    var bounded = timed && typeof a.endsAt === "number" && a.endsAt > a.startedAt;
    progress.hidden = !bounded;
    elapsedLine.hidden = !timed || bounded;
    if (bounded) {
      var total = a.endsAt - a.startedAt, done = Math.min(Math.max(now - a.startedAt, 0), total);
      bar.style.width = (100 * done / total).toFixed(2) + "%";
      elapsedText.textContent = clock(done);
      totalText.textContent = clock(total);
    } else if (timed) {
      elapsedClock.textContent = clock(now - a.startedAt);  // "elapsed" follows for screen readers only
    }
  }
  setInterval(tick, 1000);

  // EventSource retries by itself after network errors; after a non-200 answer it gives up (CLOSED),
  // so we reconnect by hand with jittered exponential backoff.
  var source = null, backoff = 1000;
  function connect() {
    source = new EventSource(card.getAttribute("data-stream-url"));
    source.addEventListener("open", function () { backoff = 1000; });
    source.addEventListener("presence", function (e) {
      try { render(JSON.parse(e.data)); } catch (err) { /* ignore a malformed event */ }
    });
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.CLOSED) return;
      var wait = backoff * (0.5 + Math.random());
      backoff = Math.min(backoff * 2, 60000);
      setTimeout(connect, wait);
    });
  }
  render(null);
  connect();
})();
