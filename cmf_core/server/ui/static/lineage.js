// Pan and zoom of the server-drawn lineage SVG (svg-pan-zoom, vendored). Nodes are plain links.
(function () {
  "use strict";
  var svg = document.querySelector("#graph svg.lineage");
  if (!svg || typeof svgPanZoom !== "function") { return; }
  svg.style.overflow = "hidden";  // set through the CSSOM: svg-pan-zoom would write a style attribute, which the CSP refuses
  var focus = svg.querySelector(".node.focus");
  var zoom = svgPanZoom(svg, { viewportSelector: ".viewport", zoomScaleSensitivity: 0.3, minZoom: 0.02,
                               maxZoom: 20, fit: true, center: true, controlIconsEnabled: false,
                               dblClickZoomEnabled: false });
  if (focus && zoom.getSizes().realZoom < 0.5) {  // a big neighbourhood: start readable, around the focus
    var box = focus.getBBox(), m = focus.transform.baseVal.consolidate().matrix, sizes = zoom.getSizes();
    zoom.zoom(1);
    var real = zoom.getSizes().realZoom;
    zoom.pan({ x: sizes.width / 2 - (m.e + box.width / 2) * real, y: sizes.height / 2 - (m.f + box.height / 2) * real });
  }
  // our own buttons: svg-pan-zoom's control icons inject a <style> element, which the CSP refuses
  [["zoom-in", function () { zoom.zoomIn(); }], ["zoom-out", function () { zoom.zoomOut(); }],
   ["zoom-fit", function () { zoom.resize(); zoom.fit(); zoom.center(); }]].forEach(function (pair) {
    var button = document.getElementById(pair[0]);
    if (button) { button.addEventListener("click", pair[1]); button.hidden = false; }
  });
  svg.setAttribute("data-ready", "1");
})();
