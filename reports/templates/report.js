// The report's parts drawn on demand, and the click-to-explain panel. The packed data
// (reports/packing.py) is unpacked the first time a part is opened; a part's markup was escaped
// when the report was made, and the panel takes text only (textContent), so nothing from a
// results file can become code here.
(function () {
  "use strict";
  var packs = JSON.parse(document.getElementById("packed").textContent);
  var unpacked = {};
  var panel = document.getElementById("details");
  var title = document.getElementById("details-title");
  var rows = document.getElementById("details-rows");
  var anchor = document.getElementById("details-anchor");

  // "parts": markup by id, the details table and "where"; "reproducers": markup by id.
  function data(name) {
    if (!unpacked[name]) {
      var bytes = Uint8Array.from(atob(packs[name]), function (c) { return c.charCodeAt(0); });
      var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
      unpacked[name] = new Response(stream).json();
      unpacked[name].catch(function (error) { console.error("the report's packed " + name + " cannot be read:", error); });
    }
    return unpacked[name];
  }

  // Draw a folded part (data-lazy names its markup) into its .lazy element, once.
  function fill(part) {
    if (!part.filling) {
      var name = part.dataset.lazy.indexOf("reproduce-") === 0 ? "reproducers" : "parts";
      part.filling = data(name).then(function (d) {
        part.querySelector(":scope > .lazy").innerHTML = d.markup[part.dataset.lazy] || "";
      });
    }
    return part.filling;
  }

  // toggle does not bubble: caught on its way down. Parts open from the start fire it too.
  document.addEventListener("toggle", function (event) {
    var part = event.target;
    if (part.open && part.dataset && part.dataset.lazy) { fill(part); }
  }, true);
  document.querySelectorAll("details[open][data-lazy]").forEach(fill);

  // Open the element with this id and what folds it; a known deviation's result lives in its
  // group's markup until that is drawn ("where" names the group).
  function reveal(id) {
    var target = document.getElementById(id);
    var ready = target ? Promise.resolve(target) : data("parts").then(function (d) {
      var group = d.where[id] && document.getElementById(d.where[id]);
      if (!group) { return null; }
      group.open = true;
      return fill(group).then(function () { return document.getElementById(id); });
    });
    return ready.then(function (found) {
      if (!found) { return; }
      for (var up = found; up; up = up.parentElement) {
        if (up.tagName === "DETAILS") { up.open = true; }
      }
      found.scrollIntoView();
    });
  }

  function show(index) {
    data("parts").then(function (d) {
      // An entry is [kind, title, values, anchor]; its labels are the kind's schema.
      var entry = d.details.entries[index];
      if (!entry) { return; }
      var labels = d.details.schemas[entry[0]];
      title.textContent = entry[1];
      rows.replaceChildren();
      entry[2].forEach(function (value, i) {
        if (value === null) { return; }
        var tr = document.createElement("tr");
        var th = document.createElement("th");
        var td = document.createElement("td");
        th.textContent = labels[i];
        td.textContent = value;
        tr.append(th, td);
        rows.append(tr);
      });
      anchor.hidden = !entry[3];
      if (entry[3]) { anchor.setAttribute("href", "#" + entry[3]); }
      panel.hidden = false;
    });
  }

  // Copy a reproducer; where the clipboard is not offered (a file:// page in some browsers) the
  // snippet is selected for Ctrl+C instead.
  function copy(button) {
    var code = button.closest("details").querySelector("pre.snippet");
    var select = function () {
      var range = document.createRange();
      range.selectNodeContents(code);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "selected: press Ctrl+C";
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(code.textContent).then(function () { button.textContent = "copied"; }, select);
    } else {
      select();
    }
  }

  document.addEventListener("click", function (event) {
    var explained = event.target.closest("[data-k]");
    if (explained) { show(Number(explained.getAttribute("data-k"))); return; }
    var button = event.target.closest("button.copy");
    if (button) { copy(button); return; }
    var link = event.target.closest("a[href^='#']");
    if (link && link.getAttribute("href").length > 1) {
      var id = link.getAttribute("href").slice(1);
      var target = document.getElementById(id);
      // A plain link to an open section needs nothing; a folded or undrawn one is opened first.
      if (!target || target.tagName === "DETAILS" || target.closest("details:not([open])")) {
        event.preventDefault();
        history.replaceState(null, "", "#" + id);
        reveal(id);
      }
    }
  });
  document.getElementById("details-close").addEventListener("click", function () { panel.hidden = true; });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") { panel.hidden = true; } });
  if (location.hash.length > 1) { reveal(decodeURIComponent(location.hash.slice(1))); }
})();
