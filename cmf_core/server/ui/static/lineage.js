// Pan and zoom of the server-drawn lineage SVG, with level of detail.  Nodes are plain links.
//
// The drawing is moved and scaled as a whole by a CSS transform of the <div class="pan"> around the <svg> (set
// through the CSSOM: the CSP refuses style attributes).  While a drag or wheel lasts, the pan is a layer of its
// own (`will-change: transform`), which the browser moves and scales as it was painted instead of painting
// every node again each frame, and a cover takes the pointer events; once the gesture stops the drawing is
// painted once, sharp at the new scale.  Labels are shown for the nodes in view only (class "near"), and only
// at a scale they can be read at: SVG text is laid out again whenever the scale changes.
(function () {
  "use strict";
  var box = document.getElementById("graph");
  var svg = box && box.querySelector("svg.lineage");
  if (!svg) { return; }
  var pan = svg.parentNode, cover = box.querySelector(".cover");
  var FIT_FROM = 0.5;     // a drawing that fits at this scale or more is fitted; else it starts at scale 1
  var LABELS_FROM = 0.45; // below this the labels (12 px, under 6 px on screen) are not drawn
  var MAX_FIT = 1.5, MAX_ZOOM = 4, SETTLE_MS = 150, MARGIN = 300;
  var width = svg.width.baseVal.value, height = svg.height.baseVal.value;
  var view = { x: 0, y: 0, k: 1 };
  var pending = false, settle = 0;
  var nodes = Array.prototype.map.call(svg.querySelectorAll("g.node"), function (g) {
    var rect = g.querySelector("rect:not(.stack)");  // where the server placed the node
    return { g: g, x: +rect.getAttribute("x"), y: +rect.getAttribute("y"), near: false };
  });
  var first = svg.querySelector("g.node rect");
  var nodeW = first ? +first.getAttribute("width") : 0, nodeH = first ? +first.getAttribute("height") : 0;

  function fitScale() { return Math.min(box.clientWidth / width, box.clientHeight / height); }
  var minZoom = Math.min(fitScale() / 2, 0.1);

  function apply() {
    pending = false;
    pan.style.transform = "translate(" + view.x + "px," + view.y + "px) scale(" + view.k + ")";
  }
  function schedule() {  // one transform per frame, however many events came in it
    if (!pending) { pending = true; requestAnimationFrame(apply); }
  }
  function label() {  // the labels of the nodes in view (and a margin around), if they can be read
    var readable = view.k >= LABELS_FROM;
    var x0 = -view.x / view.k - MARGIN, y0 = -view.y / view.k - MARGIN;
    var x1 = x0 + box.clientWidth / view.k + 2 * MARGIN, y1 = y0 + box.clientHeight / view.k + 2 * MARGIN;
    nodes.forEach(function (n) {
      var near = readable && n.x + nodeW > x0 && n.x < x1 && n.y + nodeH > y0 && n.y < y1;
      if (near !== n.near) { n.g.classList.toggle("near", near); n.near = near; }
    });
    if (svg.classList.contains("far") === readable) { svg.classList.toggle("far", !readable); }
  }
  function still() {
    pan.style.willChange = "auto";
    cover.classList.remove("on");
    label();
  }
  function moving() {
    if (!settle) { pan.style.willChange = "transform"; cover.classList.add("on"); }
    clearTimeout(settle);
    settle = setTimeout(function () { settle = 0; still(); }, SETTLE_MS);
  }
  function zoomAt(factor, cx, cy) {
    var k = Math.max(minZoom, Math.min(MAX_ZOOM, view.k * factor));
    view.x = cx - (cx - view.x) * k / view.k;
    view.y = cy - (cy - view.y) * k / view.k;
    view.k = k;
    schedule();
  }
  function fit() {
    var k = Math.min(fitScale(), MAX_FIT);
    view = { k: k, x: (box.clientWidth - width * k) / 2, y: (box.clientHeight - height * k) / 2 };
    apply();
    label();
  }
  function start() {  // readable from the first frame: around the focus, else from the sources on the left
    if (fitScale() >= FIT_FROM) { fit(); return; }
    var focus = svg.querySelector(".node.focus");  // else the middle, where the columns are centred
    view.k = 1;
    if (focus) {
      var at = nodes.filter(function (n) { return n.g === focus; })[0];
      view.x = box.clientWidth / 2 - (at.x + nodeW / 2);
      view.y = box.clientHeight / 2 - (at.y + nodeH / 2);
    } else {
      view.x = Math.max(0, (box.clientWidth - width) / 2);
      view.y = (box.clientHeight - height) / 2;
    }
    apply();
    label();
  }

  box.addEventListener("wheel", function (event) {
    event.preventDefault();
    var rect = box.getBoundingClientRect();
    var delta = event.deltaY * (event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? 400 : 1);
    moving();
    // the pointer from the box's padding edge, where the transform starts (inside the border)
    zoomAt(Math.exp(-delta * 0.0015), event.clientX - rect.left - box.clientLeft, event.clientY - rect.top - box.clientTop);
  }, { passive: false });

  var drag = null, dragged = false;
  box.addEventListener("pointerdown", function (event) {
    if (event.button !== 0) { return; }
    drag = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y };
    dragged = false;
  });
  window.addEventListener("pointermove", function (event) {
    if (!drag) { return; }
    var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    if (!dragged && Math.abs(dx) + Math.abs(dy) < 4) { return; }  // a click, not yet a drag
    dragged = true;
    moving();
    view.x = drag.vx + dx;
    view.y = drag.vy + dy;
    schedule();
  });
  window.addEventListener("pointerup", function () { drag = null; });
  box.addEventListener("click", function (event) {  // the end of a drag is no click on the node under it
    if (dragged) { event.preventDefault(); event.stopPropagation(); dragged = false; }
  }, true);
  box.addEventListener("dragstart", function (event) { event.preventDefault(); });

  [["zoom-in", function () { zoomAt(1.4, box.clientWidth / 2, box.clientHeight / 2); moving(); }],
   ["zoom-out", function () { zoomAt(1 / 1.4, box.clientWidth / 2, box.clientHeight / 2); moving(); }],
   ["zoom-fit", fit]].forEach(function (pair) {
    var button = document.getElementById(pair[0]);
    if (button) { button.addEventListener("click", pair[1]); button.hidden = false; }
  });
  start();
  svg.setAttribute("data-ready", "1");
})();
