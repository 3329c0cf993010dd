// The profile's music player: native <audio> elements streaming through /api/v1/profiles/<id>/music/<isrc>.
// Title and artist come from the profile (server-rendered); the worker's x-track-* headers, read with a
// HEAD request, fill what the profile left empty and add album and duration. One track plays at a time.
(function () {
  "use strict";

  function formatDuration(value) {
    var seconds = parseInt(value, 10);
    if (!isFinite(seconds) || seconds <= 0) return "";
    var s = seconds % 60;
    return Math.floor(seconds / 60) + ":" + (s < 10 ? "0" : "") + s;
  }

  function applyHeaders(figure, headers) {
    var title = headers.get("X-Track-Title");
    var artist = headers.get("X-Track-Artist");
    if (title && figure.dataset.profileTitle !== "1") {
      figure.querySelector(".track-title").textContent = title;
    }
    if (artist && figure.dataset.profileArtist !== "1") {
      figure.querySelector(".track-artist").textContent = artist;
    }
    var parts = [];
    var album = headers.get("X-Track-Album");
    if (album) parts.push(album);
    var duration = formatDuration(headers.get("X-Track-Duration"));
    if (duration) parts.push(duration);
    figure.querySelector(".track-meta").textContent = parts.join(" · ");
  }

  function loadMetadata(figure, audio) {
    if (figure.dataset.metaLoaded) return;
    figure.dataset.metaLoaded = "1";
    fetch(audio.getAttribute("src"), { method: "HEAD", cache: "no-store" })
      .then(function (response) {
        if (response.ok) applyHeaders(figure, response.headers);
        figure.dataset.metaStatus = String(response.status);
      })
      .catch(function () { figure.dataset.metaStatus = "error"; });
  }

  var figures = document.querySelectorAll(".music .track");
  var audios = [];
  Array.prototype.forEach.call(figures, function (figure) {
    var audio = figure.querySelector("audio");
    if (!audio) return;
    audios.push(audio);
    // Only ask the worker up front when the profile is missing something to show.
    if (figure.dataset.profileTitle !== "1" || figure.dataset.profileArtist !== "1") loadMetadata(figure, audio);
    audio.addEventListener("play", function () {
      loadMetadata(figure, audio);
      audios.forEach(function (other) { if (other !== audio) other.pause(); });
      figure.classList.add("playing");
    });
    audio.addEventListener("pause", function () { figure.classList.remove("playing"); });
    audio.addEventListener("error", function () {
      figure.classList.add("unavailable");
      figure.querySelector(".track-meta").textContent = "Unavailable right now";
    });
  });
})();
