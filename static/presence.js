// The live Discord presence card: one EventSource, one 1-second ticker, text only (never innerHTML).
(function () {
  "use strict";
  var card = document.getElementById("presence");
  if (!card || !card.getAttribute("data-stream-url")) return;

  var $ = function (sel) { return card.querySelector(sel); };
  var dot = $(".status-dot"), statusText = $(".status-text"), activityLine = $(".presence-activity");
  var detailsLine = $(".presence-details"), stateLine = $(".presence-state");
  var img = $(".presence-image"), progress = $(".presence-progress"), bar = $(".presence-progress .bar span");
  var elapsedText = $(".presence-progress .elapsed"), totalText = $(".presence-progress .total");
  var elapsedLine = $(".presence-elapsed");

  var STATUS = { online: "Online", idle: "Idle", dnd: "Do Not Disturb", offline: "Offline" };
  var VERB = { 0: "Playing", 1: "Streaming", 2: "Listening to", 3: "Watching", 5: "Competing in" };
  var current = null;  // the activity the ticker follows

  // Discord asset references: spotify:ID and mp:PATH become URLs; plain https URLs pass; anything else is dropped.
  function assetUrl(ref) {
    if (typeof ref !== "string" || !ref) return null;
    if (ref.indexOf("spotify:") === 0) return "https://i.scdn.co/image/" + encodeURIComponent(ref.slice(8));
    if (ref.indexOf("mp:") === 0) return "https://media.discordapp.net/" + encodeURI(ref.slice(3).replace(/^\/+/, ""));
    if (/^https:\/\//i.test(ref)) return ref;
    return null;
  }

  function clock(ms) {
    var s = Math.max(0, Math.floor(ms / 1000)), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    var ss = ("0" + (s % 60)).slice(-2);
    return h ? h + ":" + ("0" + m).slice(-2) + ":" + ss : m + ":" + ss;
  }

  function setText(el, text) { el.textContent = text || ""; el.hidden = !text; }

  img.addEventListener("error", function () { img.hidden = true; });  // the placeholder shows; src kept, not refetched
  img.addEventListener("load", function () { img.hidden = false; });

  function activityTitle(a) {
    if (a.type === 4) return a.state || a.name || "";            // custom status: the text is in state
    var verb = VERB[a.type];
    return verb ? verb + " " + (a.name || "") : (a.name || "");
  }

  function render(snapshot) {
    var status = snapshot && STATUS[snapshot.status] ? snapshot.status : "offline";
    dot.className = "status-dot status-" + status;
    statusText.textContent = STATUS[status];
    var a = snapshot && snapshot.activity ? snapshot.activity : null;
    current = a;
    card.setAttribute("data-status", status);
    card.setAttribute("data-activity-type", a ? String(a.type) : "");
    card.classList.toggle("presence-listening", !!a && a.type === 2);  // any type-2 activity, not only Spotify
    setText(activityLine, a ? activityTitle(a) : "");
    setText(detailsLine, a ? a.details : "");
    setText(stateLine, a && a.type !== 4 ? a.state : "");
    var src = a ? assetUrl(a.largeImage) : null;
    if (src) {
      if (img.getAttribute("src") !== src) { img.hidden = true; img.src = src; }
      img.alt = a.largeText || "";
      img.title = a.largeText || "";
    } else {
      img.hidden = true;
      img.removeAttribute("src");
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
      elapsedLine.textContent = clock(now - a.startedAt) + " elapsed";
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
