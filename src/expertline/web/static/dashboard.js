// The dashboard follows /admin/live (Server-Sent Events). Pictures may arrive quickly; the page
// keeps only the newest and redraws at most once every 250 ms, so a burst of events never
// floods the browser. #board-stats counts what happened (messages, redraws, the longest
// redraw, main-thread tasks over 50 ms) for whoever measures the page.
(function () {
  "use strict";
  var MIN_GAP = 250;
  var stats = { messages: 0, renders: 0, lastRenderMs: 0, maxRenderMs: 0, longTasks: 0 };
  var statsEl = document.getElementById("board-stats");
  function publish() {
    statsEl.dataset.messages = stats.messages;
    statsEl.dataset.renders = stats.renders;
    statsEl.dataset.maxRenderMs = stats.maxRenderMs.toFixed(1);
    statsEl.dataset.longTasks = stats.longTasks;
  }
  if (window.PerformanceObserver) {
    try {
      new PerformanceObserver(function (list) {
        stats.longTasks += list.getEntries().length; publish();
      }).observe({ entryTypes: ["longtask"] });
    } catch (e) { /* not supported: stays 0 */ }
  }
  var latest = JSON.parse(document.getElementById("board-initial").textContent);
  var skew = Date.now() / 1000 - latest.at;
  var pending = null, lastDraw = 0, timer = null;
  var state = document.getElementById("live-state");

  function text(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== String(value)) el.textContent = value;
  }
  function wait(t) {
    if (!t) return "–";
    return Math.max(0, Math.round(Date.now() / 1000 - skew - t)) + " s";
  }
  function cell(tr, cls, value) {
    var td = tr.querySelector("." + cls);
    if (td.textContent !== value) td.textContent = value;
  }
  function span(cls, label) {
    var s = document.createElement("span"); s.className = cls; s.textContent = label; return s;
  }

  function draw() {
    timer = null;
    if (!pending) return;
    var started = performance.now();
    var p = pending; pending = null; latest = p; lastDraw = Date.now();
    skew = Date.now() / 1000 - p.at;
    Object.keys(p.experts).forEach(function (k) { text("count-" + k, p.experts[k]); });
    ["in_flight", "queued", "offered", "assigned", "connected"].forEach(function (k) {
      text("tasks-" + k, p.tasks[k] || 0);
    });
    text("board-version", p.config_version);
    text("board-events", p.events);
    var body = document.querySelector("#queues tbody");
    p.queues.forEach(function (q) {
      var tr = body.querySelector('tr[data-queue="' + CSS.escape(q.id) + '"]');
      if (!tr) {
        var empty = body.querySelector("td[colspan]");
        if (empty) empty.parentNode.remove();
        tr = document.createElement("tr");
        tr.dataset.queue = q.id;
        tr.innerHTML = '<td></td><td class="num waiting"></td><td class="num oldest"></td>' +
          '<td class="num handled"></td><td class="num sl"></td>';
        tr.firstChild.textContent = q.name + " (" + q.id + ")";
        body.appendChild(tr);
      }
      cell(tr, "waiting", String(q.waiting));
      cell(tr, "oldest", wait(q.oldest));
      cell(tr, "handled", String(q.handled_today));
      cell(tr, "sl", q.service_level === null ? "–" : Math.round(q.service_level * 100) + "%");
    });
    var nodes = document.querySelector("#nodes tbody");
    p.nodes.forEach(function (n) {
      var tr = nodes.querySelector('tr[data-node="' + CSS.escape(n.node) + '"]');
      if (!tr) return;
      var ha = tr.querySelector(".ha"); ha.textContent = "";
      ha.appendChild(!n.fresh ? span("down", "not seen lately") :
        n.active ? span("up", "active") : document.createTextNode("standby"));
      var links = tr.querySelector(".links"); links.textContent = "";
      if (!n.links.length) links.appendChild(span("muted", "none"));
      n.links.forEach(function (c) {
        links.appendChild(span(c.up ? "up" : "down", c.name + ": " + (c.up ? "up" : "down")));
        links.appendChild(document.createTextNode(" "));
      });
    });
    stats.renders += 1;
    stats.lastRenderMs = performance.now() - started;
    stats.maxRenderMs = Math.max(stats.maxRenderMs, stats.lastRenderMs);
    publish();
  }

  function schedule() {
    if (timer !== null) return;
    var gap = Math.max(0, MIN_GAP - (Date.now() - lastDraw));
    timer = setTimeout(function () { requestAnimationFrame(draw); }, gap);
  }

  var source = new EventSource("/admin/live");
  source.addEventListener("open", function () { state.textContent = "Live"; });
  source.addEventListener("error", function () { state.textContent = "Reconnecting…"; });
  source.addEventListener("signed-out", function () { source.close(); location.reload(); });
  source.addEventListener("board", function (e) {
    stats.messages += 1;
    statsEl.dataset.messages = stats.messages;
    pending = JSON.parse(e.data);
    schedule();
  });
  // Waits grow by themselves: refresh them every second between pictures.
  setInterval(function () {
    if (pending || !latest) return;
    document.querySelectorAll("#queues tbody tr[data-queue]").forEach(function (tr) {
      var q = latest.queues.find(function (x) { return x.id === tr.dataset.queue; });
      if (q) cell(tr, "oldest", wait(q.oldest));
    });
  }, 1000);
})();
