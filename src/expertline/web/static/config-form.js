// Checks a configuration form as it is typed: the server validates it exactly as an import
// would (schema, then the whole document: references, CEL) and the problems appear at their
// fields. Nothing is saved until the form is submitted.
(function () {
  "use strict";
  var form = document.getElementById("object-form");
  if (!form) return;
  var state = document.getElementById("check-state");
  var general = document.getElementById("general-errors");
  var timer = null, seq = 0;

  function show(result) {
    var fields = result.fields || {};
    form.querySelectorAll("[name]").forEach(function (input) {
      var out = document.getElementById("e-" + input.name);
      if (!out) return;
      var errs = fields[input.name] || [];
      out.textContent = errs.join("; ");
      if (errs.length) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    });
    general.innerHTML = "";
    if (result.general && result.general.length) {
      var ul = document.createElement("ul");
      ul.className = "problems";
      result.general.forEach(function (p) {
        var li = document.createElement("li"); li.textContent = p; ul.appendChild(li);
      });
      general.appendChild(ul);
    }
    state.textContent = result.ok ? "No problems found." : "Problems found: see the fields.";
  }

  function check() {
    var mine = ++seq;
    state.textContent = "Checking…";
    fetch(form.dataset.check, {
      method: "POST",
      body: new FormData(form),
      headers: { "X-CSRF-Token": form.dataset.csrf },
      credentials: "same-origin"
    }).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (result) { if (result && mine === seq) show(result); })
      .catch(function () { state.textContent = ""; });
  }

  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  form.addEventListener("change", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 50);
  });
})();
