// clickup-bridge console: the only script, served from the binary.
// A page that shows work in progress (a pending delivery, an unrouted event,
// the overview) carries data-refresh="<seconds>" on <body>; reload it then,
// unless the operator is typing in a field or has opened a <details>.
(function () {
  "use strict";
  var seconds = Number(document.body && document.body.getAttribute("data-refresh"));
  if (!seconds || seconds < 1) {
    return;
  }
  function busy() {
    var a = document.activeElement;
    if (a && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName)) {
      return true;
    }
    return document.querySelector("details[open]") !== null;
  }
  function tick() {
    if (busy()) {
      window.setTimeout(tick, seconds * 1000);
    } else {
      window.location.reload();
    }
  }
  window.setTimeout(tick, seconds * 1000);
})();
