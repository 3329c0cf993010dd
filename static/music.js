// The profile's music player: our own controls (a real button and a range slider) around a hidden
// <audio> that streams through /api/v1/profiles/<id>/music/<isrc>; seeking sends Range requests.
// Title and artist come from the profile (server-rendered); the worker's x-track-* headers, read with a
// HEAD request once the visitor shows interest (hover, focus, play) or at once when the profile left a
// blank, fill what the profile left empty and add album, duration and artwork. Artwork is shown only from
// this origin or an origin the page lists in data-artwork-origins (exactly what its CSP admits).
// Text is set with textContent only. One track plays at a time.
(function () {
  "use strict";

  var section = document.querySelector(".music");
  if (!section) return;
  var artworkOrigins = (section.getAttribute("data-artwork-origins") || "").split(" ").filter(Boolean);
  var players = [];

  function clock(seconds) {
    if (!isFinite(seconds) || seconds < 0) return "-:--";
    var s = Math.floor(seconds), m = Math.floor(s / 60), h = Math.floor(m / 60);
    var ss = ("0" + (s % 60)).slice(-2);
    return h ? h + ":" + ("0" + (m % 60)).slice(-2) + ":" + ss : m + ":" + ss;
  }

  function allowedArtwork(value) {
    if (!value) return null;
    try {
      var url = new URL(value, location.href);
      if (url.protocol !== "https:" && url.origin !== location.origin) return null;
      return url.origin === location.origin || artworkOrigins.indexOf(url.origin) >= 0 ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function Player(track) {
    var audio = track.querySelector("audio");
    var button = track.querySelector(".track-play");
    var use = button.querySelector("use");
    var slider = track.querySelector(".track-slider");
    var elapsed = track.querySelector(".track-elapsed");
    var total = track.querySelector(".track-total");
    var art = track.querySelector(".track-art img");
    var name = track.getAttribute("aria-label");
    var duration = NaN, pendingSeek = null, dragging = false, metaAsked = false;

    function setDuration(seconds) {
      if (!isFinite(seconds) || seconds <= 0) return;
      duration = seconds;
      slider.max = String(Math.floor(seconds));
      slider.disabled = false;
      total.textContent = clock(seconds);
      showPosition(dragging ? Number(slider.value) : audio.currentTime);
    }

    function showPosition(seconds) {
      var at = Math.min(seconds || 0, isFinite(duration) ? duration : Infinity);
      if (!dragging) slider.value = String(Math.floor(at));
      var pct = isFinite(duration) && duration > 0 ? (100 * at) / duration : 0;
      slider.style.setProperty("--p", pct.toFixed(2) + "%");
      elapsed.textContent = clock(at);
      slider.setAttribute("aria-valuetext", clock(at) + (isFinite(duration) ? " of " + clock(duration) : ""));
    }

    function applyHeaders(headers) {
      var title = headers.get("X-Track-Title"), artist = headers.get("X-Track-Artist");
      if (title && track.dataset.profileTitle !== "1") {
        track.querySelector(".track-title").textContent = title;
        name = title;
        track.setAttribute("aria-label", title);
        slider.setAttribute("aria-label", "Seek in " + title);
      }
      if (artist && track.dataset.profileArtist !== "1") track.querySelector(".track-artist").textContent = artist;
      track.querySelector(".track-meta").textContent = headers.get("X-Track-Album") || "";
      if (!isFinite(duration)) setDuration(parseInt(headers.get("X-Track-Duration") || "", 10));
      var artwork = allowedArtwork(headers.get("X-Track-Artwork"));
      if (artwork) {
        art.addEventListener("load", function () { art.hidden = false; }, { once: true });
        art.src = artwork;
      }
      updateLabel();
    }

    function loadMetadata() {
      if (metaAsked) return;
      metaAsked = true;
      fetch(audio.getAttribute("src"), { method: "HEAD", cache: "no-store" })
        .then(function (response) {
          if (response.ok) applyHeaders(response.headers);
          track.dataset.metaStatus = String(response.status);
        })
        .catch(function () { track.dataset.metaStatus = "error"; });
    }

    function updateLabel() {
      var playing = !audio.paused && !audio.ended;
      use.setAttribute("href", playing ? "#pause" : "#play");
      button.setAttribute("aria-label", (playing ? "Pause " : "Play ") + name);
    }

    function unavailable() {
      track.classList.remove("playing", "loading");
      track.classList.add("unavailable");
      track.querySelector(".track-meta").textContent = "Unavailable right now";
      button.disabled = true;
      slider.disabled = true;
      updateLabel();
    }

    button.addEventListener("click", function () {
      if (audio.paused || audio.ended) {
        players.forEach(function (other) { if (other.audio !== audio) other.audio.pause(); });
        loadMetadata();
        track.classList.add("loading");
        var started = audio.play();
        if (started && started.catch) started.catch(function (err) { if (err && err.name !== "AbortError") unavailable(); });
      } else {
        audio.pause();
        updateLabel();  // now, not when the queued "pause" event runs: the button answers the press at once
      }
    });

    slider.addEventListener("input", function () {
      dragging = true;
      showPosition(Number(slider.value));
    });
    slider.addEventListener("change", function () {
      dragging = false;
      var to = Number(slider.value);
      if (audio.readyState >= 1) audio.currentTime = to;  // the browser sends a Range request as needed
      else pendingSeek = to;                               // applied once the stream's metadata is in
      showPosition(to);
    });

    track.addEventListener("pointerenter", loadMetadata, { once: true });
    track.addEventListener("focusin", loadMetadata, { once: true });
    if (track.dataset.profileTitle !== "1" || track.dataset.profileArtist !== "1") loadMetadata();

    audio.addEventListener("loadedmetadata", function () {
      setDuration(audio.duration);
      if (pendingSeek !== null) { audio.currentTime = pendingSeek; pendingSeek = null; }
    });
    audio.addEventListener("durationchange", function () { setDuration(audio.duration); });
    audio.addEventListener("timeupdate", function () { showPosition(audio.currentTime); });
    audio.addEventListener("playing", function () { track.classList.remove("loading"); });
    audio.addEventListener("play", function () { track.classList.add("playing"); updateLabel(); });
    audio.addEventListener("pause", function () { track.classList.remove("playing", "loading"); updateLabel(); });
    audio.addEventListener("ended", function () { track.classList.remove("playing"); showPosition(0); updateLabel(); });
    audio.addEventListener("error", unavailable);

    this.audio = audio;
  }

  Array.prototype.forEach.call(section.querySelectorAll(".track"), function (track) {
    if (track.querySelector("audio")) players.push(new Player(track));
  });
})();
