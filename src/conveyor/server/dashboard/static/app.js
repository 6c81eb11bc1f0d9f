// Conveyor dashboard: one Server-Sent Events stream per page, and the charts.
// Pages are complete without this file; it only keeps them current.
(function () {
  "use strict";
  var state = document.getElementById("live-state");
  function say(text) { if (state) state.textContent = text; }

  function replaceLive(html) {
    var live = document.getElementById("live");
    if (!live) return;
    var fresh = document.createElement("div");
    fresh.innerHTML = html;
    // Keep what the reader has open: a confirmation stays open across updates.
    live.querySelectorAll("details[open][id]").forEach(function (d) {
      var twin = fresh.querySelector("#" + CSS.escape(d.id));
      if (twin) twin.open = true;
    });
    var before = live.children, after = fresh.children;
    if (before.length !== after.length) {
      live.replaceChildren.apply(live, Array.prototype.slice.call(after));
      return;
    }
    // Replace only the sections that changed, so a button under the reader's pointer or
    // keyboard focus is not swapped for a copy while the numbers above it move.
    for (var i = after.length - 1; i >= 0; i--) {
      if (!before[i].isEqualNode(after[i])) before[i].replaceWith(after[i]);
    }
  }

  function replaceCells(changed) {
    Object.keys(changed).forEach(function (id) {
      var old = document.getElementById(id);
      if (!old) return;
      var holder = document.createElement(id === "summary" ? "div" : "tr");
      if (id === "summary") { old.innerHTML = changed[id]; return; }
      holder.innerHTML = changed[id];
      var cell = holder.firstElementChild;
      if (cell) old.replaceWith(cell);
    });
  }

  // --- charts (uPlot, vendored) ---
  var charts = [];
  // The same colours, in the same order (newest version first), as the traffic bar.
  var palette = ["#0550ae", "#a40e26", "#116329", "#6639ba", "#7d4e00", "#57606a"];

  function drawCharts(data) {
    if (typeof uPlot === "undefined") return;
    var boxes = document.querySelectorAll(".chart[data-metric]");
    var versions = data.order || Object.keys(data.versions || {});
    var labels = data.labels || {};
    var key = versions.join(",");
    boxes.forEach(function (box, i) {
      var metric = box.getAttribute("data-metric");
      var rows = [data.times];
      versions.forEach(function (v) { rows.push(data.versions[v][metric]); });
      var existing = charts[i];
      if (existing && existing.key === key) { existing.plot.setData(rows); return; }
      if (existing) existing.plot.destroy();
      var series = [{}].concat(versions.map(function (v, n) {
        return { label: labels[v] || v.slice(0, 10), stroke: palette[n % palette.length], width: 2, spanGaps: false };
      }));
      var width = Math.max(260, Math.min(box.clientWidth || 360, 520));
      var plot = new uPlot({ width: width, height: 180, series: series, legend: { live: false },
        axes: [{ stroke: "currentColor" }, { stroke: "currentColor", label: box.getAttribute("data-unit") }] }, rows, box);
      charts[i] = { key: key, plot: plot };
    });
  }

  function readChart() {
    var el = document.getElementById("chart-data");
    if (!el) return;
    try { drawCharts(JSON.parse(el.textContent)); } catch (e) { /* no chart, page still readable */ }
  }

  // --- the stream ---
  function connect(url) {
    var source = new EventSource(url);
    source.onopen = function () { say("live"); document.body.classList.add("connected"); };
    source.onerror = function () { say("reconnecting…"); document.body.classList.remove("connected"); };
    source.addEventListener("live", function (e) { replaceLive(e.data); });
    source.addEventListener("cells", function (e) { replaceCells(JSON.parse(e.data)); });
    source.addEventListener("chart", function (e) { drawCharts(JSON.parse(e.data)); });
    source.addEventListener("problem", function (e) { say(e.data); });
    source.addEventListener("signed-out", function (e) { source.close(); window.location = e.data; });
  }

  // Ages tick on the page itself, so the stream sends only cells whose state changed.
  function ago(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 90) return s + "s";
    if (s < 5400) return Math.floor(s / 60) + "m";
    if (s < 172800) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }
  function tickAges() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time[data-at]").forEach(function (t) {
      t.textContent = ago(now - parseFloat(t.getAttribute("data-at")));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setInterval(tickAges, 5000);
    readChart();
    var url = document.body.getAttribute("data-stream");
    if (url && window.EventSource) connect(url);
  });
})();
