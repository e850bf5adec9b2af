// The portal's small behaviours. Pages work without it (forms post, tables render); it adds
// charts, copy buttons, confirmations and the viewer's time zone.
(function () {
  "use strict";
  var root = document.documentElement;
  var rtl = root.dir === "rtl";
  var lang = root.lang || "en";

  // The browser's zone, for "show times in my zone" (portal.middleware.viewing_zone).
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) document.cookie = "viewer_tz=" + encodeURIComponent(zone) + "; path=/; SameSite=Lax";
  } catch (e) { /* an old browser: the organization's zone stays */ }

  document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var text = source.value !== undefined ? source.value : source.textContent;
      var done = function () { button.textContent = button.getAttribute("data-copied") || "✓"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text.trim()).then(done);
      } else {
        var range = document.createRange(); range.selectNodeContents(source);
        var selection = window.getSelection(); selection.removeAllRanges(); selection.addRange(range);
        document.execCommand("copy"); done();
      }
    });
  });

  // Charts: <canvas data-chart="ID"> drawn from <script type="application/json" id="ID">, a spec
  // {type, labels, datasets: [{label, data}], money: "USD"|null, stacked: bool, horizontal: bool}.
  var palette = ["#2f5bd3", "#1a7f4b", "#d97706", "#b42318", "#7c3aed", "#0e7490", "#be185d", "#4d7c0f", "#64748b"];
  function formatter(spec) {
    var options = spec.money
      ? { style: "currency", currency: spec.money.length === 3 ? spec.money : "USD", maximumFractionDigits: 2 }
      : { maximumFractionDigits: spec.digits === undefined ? 2 : spec.digits };
    if (spec.percent) options = { style: "percent", maximumFractionDigits: 1 };
    var number = new Intl.NumberFormat(lang, options);
    return function (value) { return number.format(value); };
  }
  window.portalCharts = [];
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    if (typeof Chart === "undefined") return;
    var spec = JSON.parse(document.getElementById(canvas.getAttribute("data-chart")).textContent);
    var format = formatter(spec);
    var round = spec.type === "doughnut" || spec.type === "pie";
    var datasets = spec.datasets.map(function (set, i) {
      var colour = set.color || palette[i % palette.length];
      return Object.assign({
        borderColor: round ? "#fff" : colour,
        backgroundColor: round ? spec.labels.map(function (_, j) { return palette[j % palette.length]; }) : colour + (spec.type === "line" ? "33" : "cc"),
        fill: spec.type === "line" && spec.datasets.length === 1, tension: 0.25, pointRadius: 2
      }, set);
    });
    var scales = round ? {} : {
      x: { stacked: !!spec.stacked, reverse: rtl && !spec.horizontal, ticks: spec.horizontal ? { callback: function (v) { return format(v); } } : {} },
      y: { stacked: !!spec.stacked, position: rtl ? "right" : "left", beginAtZero: true,
           ticks: spec.horizontal ? {} : { callback: function (v) { return format(v); } } }
    };
    var chart = new Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, locale: lang,
        indexAxis: spec.horizontal ? "y" : "x",
        plugins: {
          legend: { display: round || spec.datasets.length > 1, rtl: rtl, position: round ? "right" : "top" },
          tooltip: { rtl: rtl, callbacks: { label: function (item) {
            var value = item.parsed !== null && typeof item.parsed === "object" ? (spec.horizontal ? item.parsed.x : item.parsed.y) : item.parsed;
            return (item.dataset.label ? item.dataset.label + ": " : (round ? item.label + ": " : "")) + format(value);
          } } }
        },
        scales: scales
      }
    });
    canvas.setAttribute("data-drawn", "true");
    window.portalCharts.push(chart);
  });
})();
