// The expert console follows /console/live (Server-Sent Events): offers appear, count down and
// disappear (withdrawn, taken by someone else, timed out) without a reload; answers and presence
// changes are sent with the page's CSRF token and their outcome is said in #console-message.
(function () {
  "use strict";
  var picture = JSON.parse(document.getElementById("console-initial").textContent);
  var skew = Date.now() / 1000 - picture.now;
  var csrf = document.querySelector("#presence-form input[name=csrf]").value;
  var message = document.getElementById("console-message");
  var template = document.getElementById("offer-template");
  var answered = {};

  function say(text, ok) {
    message.textContent = text;
    message.className = ok ? "notice" : "problems";
  }

  function offerCard(o) {
    var node = document.importNode(template.content.firstElementChild, true);
    node.dataset.offer = o.id;
    node.setAttribute("aria-labelledby", "offer-" + o.id + "-title");
    var h = node.querySelector("h3");
    h.id = "offer-" + o.id + "-title";
    h.textContent = "Offer #" + o.code + " · " + o.queue;
    node.querySelector(".caller").textContent = o.caller || "not shown";
    node.querySelector(".countdown").dataset.expires = o.expires_at || "";
    var attrs = Object.keys(o.attributes || {});
    if (attrs.length) {
      var dl = document.createElement("dl"); dl.className = "attributes";
      attrs.forEach(function (k) {
        var dt = document.createElement("dt"); dt.textContent = k;
        var dd = document.createElement("dd"); dd.textContent = o.attributes[k];
        dl.appendChild(dt); dl.appendChild(dd);
      });
      node.querySelector("p").after(dl);
    }
    node.querySelectorAll("form").forEach(function (f) {
      var action = f.getAttribute("action");
      f.setAttribute("action", action.replace("/offers//", "/offers/" + encodeURIComponent(o.id) + "/"));
      f.querySelector("input[name=csrf]").value = csrf;
      var phone = f.querySelector("input[name=phone]");
      if (phone) {
        phone.id = "phone-" + o.id;
        f.querySelector("label").htmlFor = phone.id;
      }
      if (o.notice_only) f.remove();
    });
    return node;
  }

  function render(p) {
    var before = {};
    (picture.offers || []).forEach(function (o) { before[o.id] = o; });
    picture = p;
    skew = Date.now() / 1000 - p.now;
    document.getElementById("expert-state").textContent = p.state.replace("_", "-");
    document.querySelectorAll("#presence-form button").forEach(function (b) {
      var on = b.value === p.presence;
      b.setAttribute("aria-pressed", on ? "true" : "false");
      b.className = on ? "" : "secondary";
    });
    var box = document.getElementById("offers");
    var now = {};
    p.offers.forEach(function (o) { now[o.id] = o; });
    box.querySelectorAll("[data-offer]").forEach(function (card) {
      if (!now[card.dataset.offer]) card.remove();
    });
    Object.keys(before).forEach(function (id) {
      if (!now[id] && !answered[id]) {
        say("Offer #" + before[id].code + " was withdrawn: it is no longer yours to answer.", false);
      }
    });
    p.offers.forEach(function (o) {
      if (!box.querySelector('[data-offer="' + CSS.escape(o.id) + '"]')) box.appendChild(offerCard(o));
    });
    var empty = document.getElementById("no-offers");
    if (p.offers.length && empty) empty.remove();
    if (!p.offers.length && !empty) {
      var none = document.createElement("p");
      none.className = "muted"; none.id = "no-offers"; none.textContent = "No offer right now.";
      box.appendChild(none);
    }
    var tasks = document.getElementById("tasks");
    tasks.textContent = "";
    if (!p.tasks.length) {
      var nt = document.createElement("p"); nt.className = "muted"; nt.textContent = "No task.";
      tasks.appendChild(nt);
    }
    p.tasks.forEach(function (t) {
      var line = document.createElement("p");
      line.className = "task"; line.dataset.task = t.id;
      line.textContent = "#" + t.code + " · " + t.queue + " · " + t.status + " · call to " + (t.label || "");
      tasks.appendChild(line);
    });
    document.getElementById("wrap-up").dataset.until = p.wrap_up_until || "";
    tick();
  }

  function tick() {
    var now = Date.now() / 1000 - skew;
    document.querySelectorAll(".countdown").forEach(function (el) {
      var until = parseFloat(el.dataset.expires);
      el.textContent = until ? Math.max(0, Math.ceil(until - now)) + " s left" : "";
    });
    var w = document.getElementById("wrap-up");
    var until = parseFloat(w.dataset.until);
    w.textContent = until && until > now ? "(wrap-up: " + Math.ceil(until - now) + " s)" : "";
  }
  setInterval(tick, 250);
  tick();

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.matches("#presence-form, form.answer")) return;
    e.preventDefault();
    var data = new FormData(form);
    if (e.submitter && e.submitter.name) data.append(e.submitter.name, e.submitter.value);
    var offer = form.closest("[data-offer]");
    if (offer) answered[offer.dataset.offer] = true;
    form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf }
    }).then(function (r) {
      var ok = r.ok;
      return r.json().then(function (body) { say(body.message, ok); },
        function () { say(ok ? "Done." : "Refused (" + r.status + ").", ok); });
    }).catch(function () {
      say("The node did not answer; try again.", false);
    }).finally(function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
      if (offer) setTimeout(function () { delete answered[offer.dataset.offer]; }, 5000);
    });
  });

  var source = new EventSource("/console/live");
  source.addEventListener("console", function (e) { render(JSON.parse(e.data)); });
  source.addEventListener("signed-out", function () { source.close(); location.reload(); });
  source.addEventListener("stopped", function () {
    source.close();
    say("Routing stopped on this node; reload the page to find the active one.", false);
  });
})();
