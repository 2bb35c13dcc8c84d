// A page's state lives in its URL: cmfState.carry({key: value}) sets (or, for null/"", drops) query parameters in
// the address (history.replaceState), in the links to this same page and as hidden fields of its GET forms that
// have no control of that name, so that the next click keeps what a chart control or a choice just changed.
window.cmfState = (function () {
  "use strict";

  function apply(params, changes) {
    Object.keys(changes).forEach(function (key) {
      if (changes[key] === null || changes[key] === "") { params.delete(key); } else { params.set(key, changes[key]); }
    });
  }

  // The hidden field `key` of a form set to value (none for null/""), unless the form has a control of that name.
  function keep(form, key, value) {
    if (form.querySelector("[name='" + key + "']:not([type=hidden])")) { return; }
    form.querySelectorAll("input[type=hidden][name='" + key + "']").forEach(function (field) { field.remove(); });
    if (value !== null && value !== "") {
      var field = document.createElement("input");
      field.type = "hidden";
      field.name = key;
      field.value = value;
      form.appendChild(field);
    }
  }

  function carry(changes) {
    var here = new URL(location.href);
    apply(here.searchParams, changes);
    history.replaceState(null, "", here);
    document.querySelectorAll("main a[href]").forEach(function (a) {
      var url = new URL(a.getAttribute("href"), here);  // (an SVG link's .href is no string)
      if (url.origin === here.origin && url.pathname === here.pathname) {
        apply(url.searchParams, changes);
        a.setAttribute("href", url.pathname + url.search);
      }
    });
    document.querySelectorAll("main form[method=get]").forEach(function (form) {
      if (new URL(form.action).pathname === here.pathname) {
        Object.keys(changes).forEach(function (key) { keep(form, key, changes[key]); });
      }
    });
  }

  return { carry: carry, keep: keep };
})();
