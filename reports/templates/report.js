// Click on a chart element: show its result in the side panel. Text only (textContent), never
// markup, so nothing from a results file can become code here.
(function () {
  "use strict";
  var details = JSON.parse(document.getElementById("details-data").textContent);
  var panel = document.getElementById("details");
  var title = document.getElementById("details-title");
  var rows = document.getElementById("details-rows");
  var anchor = document.getElementById("details-anchor");

  function show(index) {
    // An entry is [kind, title, values, anchor]; its labels are the kind's schema.
    var entry = details.entries[index];
    if (!entry) { return; }
    var labels = details.schemas[entry[0]];
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
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-k]");
    if (target) { show(Number(target.getAttribute("data-k"))); }
  });
  document.getElementById("details-close").addEventListener("click", function () { panel.hidden = true; });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") { panel.hidden = true; } });
  // A link to a folded section (a failure, a gradient heatmap) opens it.
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[href^='#']");
    var folded = link && document.getElementById(link.getAttribute("href").slice(1));
    if (folded && folded.tagName === "DETAILS") { folded.open = true; }
  });

  // Copy a reproducer; where the clipboard is not offered (a file:// page in some browsers) the
  // snippet is selected for Ctrl+C instead.
  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", function () {
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
    });
  });
})();
